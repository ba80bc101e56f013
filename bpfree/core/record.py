"""The record of a finished run (``DIR/metrics.json``): typed and versioned.

``bpfree train`` writes it through :class:`RunRecord`, built by
:func:`bpfree.engine.outcome.build_record` from the run's typed results; ``bpfree aggregate``
reads it back through the same type, so a field that is renamed or missing fails in one line
naming the file, not as a silent empty column. No torch here: the tables are built without it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bpfree.core.errors import BpfreeError
from bpfree.core.io import read_json
from bpfree.core.spec import SCHEMA_VERSION

Status = Literal["ok", "diverged"]
# the selection rules whose test accuracy a single-stage run reports (bpfree.engine.stopping):
# the last epoch's weights, the lowest validation loss's, the highest validation accuracy's
SELECTIONS: tuple[str, ...] = ("last", "min_val_loss", "max_val_accuracy")


class RunRecord(BaseModel):
    """Every field of metrics.json. Energies in joules, times in seconds, memory in MiB;
    each energy comes with its source (nvml-counter, nvml-polling, rapl, estimate, or a
    ``+``-joined list where pieces of a resumed run differed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    spec_digest: str = Field(description="hash of the resolved spec and device type: the run's identity")
    algorithm: str
    arch: str
    dataset: str
    seed: int
    status: Status
    test_accuracy: float | None
    best_val_accuracy: float | None
    epochs: int
    # the epoch whose weights the model ends with (its last stage's best, or its last epoch)
    restored_epoch: int | None = None
    # single-stage runs (BP, FF, CaFo-Rand with joint stopping): the test accuracy of the weights
    # each selection rule chose in the one fit, no extra training (docs/measurement.md), and the
    # run's own restored_epoch; epoch_by_selection: each rule's epoch. None for staged runs
    test_accuracy_by_selection: dict[str, float | int | None] | None = None
    epoch_by_selection: dict[str, int] | None = None
    test_accuracy_last: float | None = None  # the same, flat (one table column each)
    test_accuracy_min_val_loss: float | None = None
    test_accuracy_max_val_accuracy: float | None = None
    epoch_last: int | None = None
    epoch_min_val_loss: int | None = None
    epoch_max_val_accuracy: int | None = None
    # killed and resumed from its checkpoint: time, energy and CO2 are summed over the
    # pieces, peaks are their max (see energy_covers, pieces_measured)
    resumed: bool
    pieces: int
    checkpoint_set_aside: str | None
    train_time_s: float
    checkpoints: int
    checkpoint_every_s: float
    checkpoint_time_s: float  # included in train_time_s and energy_j
    time_per_epoch_s: float
    device: str
    params: dict[str, Any]
    early_stopping: dict[str, Any]
    precision: str
    precision_flags: dict[str, Any] | None = None  # TF32 switches in force during the run
    bpfree_version: str
    torch_version: str
    torch_threads: int
    python_version: str
    host: str
    finished_at: str
    # -- what the meter saw (None: not measured) ----------------------------------------
    energy_j: float | None = None  # the computing device's energy over the fit (validation included)
    energy_source: str | None = None
    energy_device: str | None = None
    idle_power_w: float | None = None
    idle_age_s: float | None = None  # the idle baseline's age: 0 measured by this run, else reused (idle_reuse_s)
    net_energy_j: float | None = None
    gpu_energy_counter_j: float | None = None  # the GPU board by each source, side by side
    gpu_energy_polled_j: float | None = None
    cpu_energy_j: float | None = None
    cpu_energy_source: str | None = None
    cpu_idle_power_w: float | None = None
    cpu_net_energy_j: float | None = None
    test_energy_j: float | None = None
    test_energy_source: str | None = None
    test_net_energy_j: float | None = None
    test_time_s: float | None = None
    co2_kg: float | None = None
    codecarbon_energy_j: float | None = None  # CodeCarbon's whole-machine estimate, training only
    codecarbon_error: str | None = None
    peak_memory_mb: float | None = None
    peak_memory_kind: str | None = None
    peak_allocated_mb: float | None = None
    peak_reserved_mb: float | None = None
    peak_device_used_mb: float | None = None
    peak_rss_mb: float | None = None
    peak_rss_kind: str | None = None
    measurement_problems: list[str] = Field(default_factory=list)
    measurement: dict[str, Any] | None = None
    hardware: dict[str, Any] | None = None
    energy_covers: str | None = None
    pieces_measured: list[dict[str, Any]] | None = None
    codecarbon_pieces: int | None = None
    co2_covers: str | None = None
    # -- where compute, memory and time went (bpfree.engine.analysis; None: not analysed) -----------
    # FLOPs: matrix products and convolutions counted by torch's FlopCounterMode on one
    # minibatch per stage, scaled to the splits; training + validation over the fit window
    train_flops_per_sample: float | None = None  # the run's training FLOPs / (training samples x epochs)
    infer_flops_per_sample: float | None = None  # one prediction (predict), per sample
    train_flops: float | None = None
    eval_flops: float | None = None
    run_flops: float | None = None  # train_flops + eval_flops
    achieved_flops_per_s: float | None = None  # run_flops / train_time_s
    energy_per_flop_j: float | None = None  # energy_j / run_flops, only where energy was measured
    energy_per_flop_source: str | None = None
    flops_by_stage: dict[str, Any] | None = None  # per stage: epochs, FLOPs, per-sample counts, memory
    # memory by part (MiB) of the stage that holds the most, from tensor sizes
    memory_breakdown_stage: str | None = None
    memory_breakdown_source: str | None = None
    memory_breakdown_total_mb: float | None = None
    memory_weights_mb: float | None = None
    memory_gradients_mb: float | None = None
    memory_optimizer_mb: float | None = None
    memory_activations_mb: float | None = None
    memory_cached_features_mb: float | None = None
    memory_data_mb: float | None = None
    hardware_analysis_s: float | None = None  # the analysis' own time, before (outside) the fit
    # the fit's wall time by the loop's timers (bpfree.engine.loop.TimeSplit)
    time_data_s: float | None = None
    time_compute_s: float | None = None
    time_eval_s: float | None = None
    time_checkpoint_s: float | None = None
    time_measurement_s: float | None = None
    time_other_s: float | None = None
    time_split_covers: str | None = None
    profile_trace: str | None = None  # torch.profiler's trace of measurement.profile_epoch

    def scalars(self) -> dict[str, Any]:
        """The flat fields (one table row per run); sections and lists left out."""
        return {k: v for k, v in self.model_dump().items() if not isinstance(v, (dict, list))}


def read_record(path: str | Path) -> RunRecord:
    """A metrics.json, checked against this bpfree's RunRecord; one line if it is not one."""
    path = Path(path)
    data = read_json(path, "run metrics")  # bounded, UTF-8, one line if it is no JSON
    if not isinstance(data, dict):
        raise BpfreeError(f"{path} is not a run's metrics (not a JSON object)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BpfreeError(
            f"{path} has schema_version {version!r}, this bpfree reads {SCHEMA_VERSION}: "
            "it was written by another bpfree; train the run again (remove its metrics.json)"
        )
    try:
        record = RunRecord.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(map(str, first["loc"]))
        raise BpfreeError(f"{path}: field {where!r}: {first['msg']}") from None
    for name, value in record.scalars().items():
        # bpfree writes no infinity (write_json_atomic makes it null): 1e400 is not ours
        if isinstance(value, float) and math.isinf(value):
            raise BpfreeError(f"{path}: field {name!r} is {value}, not a finite number")
    if record.epochs < 0 or record.train_time_s < 0:
        raise BpfreeError(f"{path}: epochs and train_time_s must not be negative")
    return record
