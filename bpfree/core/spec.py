"""The specification of a run, and of the workflow config that plans runs: every setting,
its default and its check, written once, here.

Everything else is derived from these models: the JSON schema the Snakefile validates with
(``bpfree schema``, ``workflow/schemas/config.schema.yaml``), the key table of
``config/README.md``, the command-line flags of ``bpfree train`` (which build a ``RunSpec``),
each run's ``spec.yaml``, and a run's identity (a hash of its resolved spec).

    RunSpec            one training run: subject, params, and the settings below
      EarlyStopping    the one early-stopping policy (every algorithm, every stage)
      Measurement      how energy, memory and CO2 are measured
      Machine          where it runs (device, threads, data root): not part of its identity
    Tuning             one Optuna study's budget and sampler (``bpfree tune``)
    Settings           what a config gives every run and study (the sections above, Tuning)
    WorkflowConfig     the whole config file: Settings, experiments x seeds, workers, image

Reading and checking a spec imports neither torch nor any algorithm; filling in an
algorithm's defaults (:func:`bpfree.engine.resolve.resolve`) does."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from bpfree.core.errors import BpfreeError
from bpfree.core.io import read_yaml  # the one YAML reader, with limits (re-exported: spec.read_yaml)
from bpfree.core.outputs import TARGET_FRACTION

SCHEMA_VERSION = 1  # of spec.yaml and metrics.json; raised when a field changes meaning
MAX_THREADS = 1024  # torch starts that many threads; far more (1e5) ends in a segmentation fault
# a tuning trial whose worker died while running it this many times (an out-of-memory kill, a
# crash of the interpreter) is failed rather than run again (bpfree.tuning.workers)
MAX_KILLED_ATTEMPTS = 3
MAX_SEED = 2**63 - 1  # a 64-bit integer: torch's generators, numpy and the tables (Int64) hold it
# the precision choices, written once: the spec's check, the schema's enum, the CLI's choices and
# bpfree.engine.precision all read them from here
PrecisionName = Literal["fp32", "tf32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
# the pruners, likewise: the spec's check, the schema, `bpfree tune --pruner` and the measurement script
PrunerName = Literal["median", "successive-halving", "hyperband", "none"]
PRUNERS: tuple[str, ...] = get_args(PrunerName)
# an architecture: KIND:W1,W2,... (the kind is checked against the registry, so any registered kind
# fits; bpfree.workflow.grid derives its path slug, KIND-W1-W2, and the workflow's arch wildcard)
ARCH_KIND = r"[a-z][a-z0-9_-]*"
ARCH_PATTERN = rf"^{ARCH_KIND}:[0-9]+(,[0-9]+)*$"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"


class _Model(BaseModel):
    """Strict: no key the model does not know, no type coercion (YAML's ``true`` is no
    number, ``"10"`` no integer), no NaN or infinity; frozen once built."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    def replace(self: M, where: str = "", **changes: Any) -> M:
        """A copy with ``changes``, checked as a new instance would be (``where``: the
        section's name, for the message)."""
        return parse(type(self), {**self.model_dump(), **changes}, where)


M = TypeVar("M", bound=_Model)


def _unique(values: list) -> list:
    if len(set(map(repr, values))) != len(values):
        raise ValueError("items must be distinct")
    return values


def _no_control_characters(text: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("must not contain control characters (newline, tab, ...)")
    return text


Path_ = Annotated[
    str, AfterValidator(_no_control_characters), Field(json_schema_extra={"pattern": r"^[^\x00-\x1f\x7f]*$"})
]
Unique = Field(json_schema_extra={"uniqueItems": True})

# settings that a config gives every run and that a run spec holds: each defined once
Device = Annotated[
    str,
    Field(
        default="auto", pattern=DEVICE_PATTERN, description="torch device: auto (cuda if present), cpu, cuda, cuda:N"
    ),
]
DataRoot = Annotated[Path_, Field(default="data", description="directory holding the torchvision datasets")]
Precision = Annotated[
    PrecisionName,
    Field(
        default="fp32",
        description="precision of the matrix work of every run and trial: fp32 (the paper's; TF32 switched "
        "off), tf32 (CUDA matmuls and convolutions in TensorFloat-32; refused on a CPU), bf16 (autocast: "
        "matmuls in bfloat16, losses and reductions in float32). Part of a run's identity",
    ),
]
CheckpointEvery = Annotated[
    float,
    Field(
        default=60.0,
        ge=0,
        description="seconds between a run's checkpoints (written after an epoch once this has passed); 0: after "
        "every epoch. A write costs time and energy inside the measured fit",
    ),
]
Threads = Annotated[
    int | None,
    Field(
        default=None,
        ge=1,
        le=MAX_THREADS,
        description="CPU threads of each train/tune job (torch.set_num_threads); null: every local core, so "
        "measured jobs run one at a time and no run's time or energy includes another's",
    ),
]


class EarlyStopping(_Model):
    """One declared policy for every algorithm and stage (the paper's code varied it)."""

    monitor: Literal["val_loss", "val_accuracy"] = Field(
        "val_loss", description="what each epoch is judged by; for layer-wise methods, that of the stage trained"
    )
    mode: Literal["min", "max"] = Field("min", description="min for a loss, max for an accuracy")
    patience: int = Field(10, ge=1, description="epochs without improvement before a stage stops")
    min_delta: float = Field(0.0, ge=0, description="the least change that counts as an improvement")
    max_epochs: int = Field(
        100,
        ge=1,
        description="epoch budget of each stage; it also caps the limits an algorithm sets on its own stages "
        "(MF's epochs_per_layer, CaFo's dfa_epochs)",
    )
    restore_best: bool = Field(True, description="end each stage with its best epoch's weights")

    def stage_budget(self, stage_max_epochs: int | None) -> int:
        """A stage's epoch budget: its own limit (an algorithm's, e.g. MF's epochs_per_layer;
        None: none), capped by ``max_epochs``. The one rule: the loop, the checkpoint's check,
        the hardware analysis, the tuning budget and the forecast all take it from here."""
        return min(stage_max_epochs or self.max_epochs, self.max_epochs)

    restore_by: Literal["monitor", "val_loss", "val_accuracy"] = Field(
        "monitor",
        description="which epoch is a stage's best when restore_best is on: the monitored value as stopping "
        "judges it (monitor, min_delta included), the lowest validation loss or the highest validation "
        "accuracy (val_loss, val_accuracy: the first such epoch, strict improvement, no min_delta; the paper's "
        "BP restores by val_accuracy while it stops on val_loss)",
    )


class Measurement(_Model):
    """How each run measures energy, memory and CO2 (bpfree/measure)."""

    idle_seconds: float = Field(5.0, ge=0, description="idle baseline before training; 0 skips it (no net energy)")
    idle_reuse_s: float = Field(
        600.0,
        ge=0,
        description="reuse this machine's idle baseline of the same device and counters if it was taken at most "
        "this many seconds ago (by an earlier job; its age goes into metrics.json, idle_age_s); 0: every run "
        "takes its own",
    )
    poll_interval_s: float = Field(0.1, gt=0, description="power polling and device-memory sampling interval")
    country_iso_code: str = Field(
        "USA", pattern=r"^[A-Z]{3}$", description="CodeCarbon's carbon intensity (ISO 3166-1 alpha-3, e.g. USA, FRA)"
    )
    codecarbon: bool = Field(True, description="run CodeCarbon's offline tracker around the fit (CO2)")
    cpu_tdp_w: float | None = Field(
        None, gt=0, description="CPU power for the estimate where RAPL is missing; null: 4 W per logical CPU"
    )
    hardware_analysis: bool = Field(
        True,
        description="before the measured fit, count FLOPs and size memory by part on a copy of the algorithm, "
        "one minibatch per stage (bpfree/engine/analysis.py; docs/measurement.md)",
    )
    profile_epoch: int | None = Field(
        None,
        ge=1,
        description="profile this epoch (counted over all stages, from 1) with torch.profiler and save its trace "
        "as RUN/profile_epochN.json; it slows that epoch; null: no profiling",
    )


class Machine(_Model):
    """Where a run computes and reads its data: not part of what the run is."""

    device: Device
    threads: Threads
    data_root: DataRoot
    download: bool = Field(False, description="download a torchvision dataset that is missing")


class RunSpec(_Model):
    """One training run, complete: ``bpfree train --spec FILE`` runs exactly this."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="version of this format")
    algorithm: str = Field(description="a registered algorithm (bpfree algorithms)")
    dataset: str = Field(description="a registered dataset (bpfree datasets)")
    seed: int = Field(ge=0, le=MAX_SEED, description="seeds the split, the initial weights and the batch order")
    arch: str | None = Field(
        None, pattern=ARCH_PATTERN, description="mlp:W1,W2,... or cnn:C1,C2,...; null: the algorithm's own"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="the algorithm's hyperparameters; missing ones take its defaults"
    )
    early_stopping: EarlyStopping = EarlyStopping()
    measurement: Measurement = Measurement()
    precision: Precision
    checkpoint_every_s: CheckpointEvery
    machine: Machine = Machine()

    IDENTITY: ClassVar[tuple[str, ...]] = (
        "algorithm",
        "dataset",
        "seed",
        "arch",
        "params",
        "early_stopping",
        "precision",
    )

    def identity(self, device_type: str) -> dict[str, Any]:
        """What makes a run this run: its resolved subject, params and policy, and the type
        of device it computes on (RNG states and kernels differ between a CPU and a GPU).
        Machine details (threads, data root) and measurement settings are not part of it."""
        fields = self.model_dump(mode="json", include=set(self.IDENTITY))
        return {**fields, "device_type": device_type}

    def digest(self, device_type: str) -> str:
        """A short hash of :meth:`identity`: checkpoints and finished runs are matched by it."""
        text = json.dumps(self.identity(device_type), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class Tuning(_Model):
    """One Optuna study per algorithm x dataset x architecture (bpfree tune; bpfree/tuning/)."""

    protocol: Literal["bpfree", "paper"] = Field(
        "bpfree",
        description="bpfree: every study tuned by this section; paper: each study's trial count, trial "
        "length, early stopping, score, sampler and pruner as the paper's code tuned that configuration "
        "(bpfree/core/paper_params.yaml), over this section's search spaces and seed",
    )
    n_trials: int = Field(
        0,
        ge=0,
        description="finished trials per study (complete, pruned or failed, as Optuna's study.optimize "
        "counts them); the best complete one wins; 0 trains with the defaults",
    )
    max_epochs: int | None = Field(
        None, ge=1, description="one trial's epoch budget; null is early_stopping.max_epochs"
    )
    score: Literal["final_model", "best_epoch"] = Field(
        "final_model",
        description="a trial's value: the validation accuracy of the model it ends with (as the runs "
        "train), or of its best epoch (the paper's BP trials)",
    )
    timeout: float | None = Field(None, gt=0, description="seconds after which a worker starts no new trial")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="TPE sampler seed and every trial's training seed")
    multivariate: bool = Field(True, description="multivariate TPE")
    startup_trials: int = Field(10, ge=0, description="random trials before TPE models the space")
    pruner: PrunerName = Field(
        "median",
        description="on the per-epoch validation accuracy: median, successive-halving or hyperband "
        "(multi-fidelity: the resource is epochs, up to a trial's epoch budget), or none",
    )
    pruner_startup_trials: int = Field(
        5, ge=0, description="trials that finish before the median pruner prunes (median only)"
    )
    pruner_warmup_epochs: int = Field(0, ge=0, description="epochs of every trial never pruned")
    pruner_reduction_factor: int = Field(
        3, ge=2, description="successive-halving and hyperband: 1/this of a rung's trials go on to the next"
    )
    stale_after: float = Field(
        1800.0,
        gt=0,
        description="seconds without a heartbeat before a RUNNING trial of a vanished worker is run again "
        f"(failed once {MAX_KILLED_ATTEMPTS} workers died running it)",
    )

    def trial_policy(self, early_stopping: EarlyStopping) -> EarlyStopping:
        """A trial's early stopping: the runs' (``early_stopping``) with this section's
        ``max_epochs`` as its budget where it is set. The one rule: the tuning job trains its
        trials by it, and ``bpfree plan`` and ``bpfree status`` forecast them by it."""
        if self.max_epochs is None:
            return early_stopping
        return early_stopping.replace("early_stopping", max_epochs=self.max_epochs)

    search_spaces: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per algorithm, per parameter entries over bpfree/tuning/search_spaces.yaml "
        "({type: float|int|categorical, ...} or a fixed value)",
    )


SeedList = Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]], AfterValidator(_unique), Unique]


class Experiment(_Model):
    algorithm: str = Field(description="a registered BP-free algorithm (bpfree algorithms)")
    arch: str = Field(pattern=ARCH_PATTERN, description="mlp:W1,W2,... or cnn:C1,C2,...")
    datasets: Annotated[list[str], AfterValidator(_unique), Unique] = Field(
        min_length=1, description="registered datasets (bpfree datasets)"
    )
    params: Literal["tuned", "paper"] = Field(
        "tuned",
        description="tuned: each run (and its BP twin's) takes its study's best parameters (the algorithm's "
        "defaults when tuning.n_trials is 0); paper: the paper's code's final hyperparameters and early "
        "stopping for this algorithm, architecture and dataset (bpfree/core/paper_params.yaml), and no study",
    )
    seeds: SeedList | None = Field(
        None,
        min_length=1,
        description="this experiment's seeds (its runs and its BP twin's), in place of the config's seeds; null: "
        "the config's. A BP twin shared by experiments trains every seed any of them asks for",
    )


class Settings(_Model):
    """What a config file gives every run and every study (``bpfree train --config`` and
    ``bpfree tune --config`` read these sections of a workflow config)."""

    data_root: DataRoot
    device: Device
    job_threads: Threads
    precision: Precision
    checkpoint_every_s: CheckpointEvery
    early_stopping: EarlyStopping = EarlyStopping()
    tuning: Tuning = Tuning()
    measurement: Measurement = Measurement()


class WorkflowConfig(Settings):
    """The workflow's config file (config/config.yaml, config/paper.yaml, ``--configfile``)."""

    model_config = ConfigDict(title="bpfree workflow configuration (every key: config/README.md)")

    results: Path_ | None = Field(
        None,
        description="the folder of this config's runs, studies, tables, figures, logs and benchmarks; null: "
        "results/NAME, NAME the config file's name without its extension (config/config.yaml: results/config), "
        "so that two configs never write into each other's",
    )
    container: Path_ = Field(
        "containers/bpfree.sif",
        description="image every job runs in under --sdm apptainer (a .sif or docker://, oras://, library:// "
        "URI); ignored without it",
    )
    tune_workers: int = Field(
        1, ge=1, description="jobs working on each Optuna study at once, sharing its journal (e.g. one per GPU)"
    )
    seeds: SeedList = Field(
        min_length=1,
        description="distinct seeds; every run of the grid and its BP twin are trained once per seed (split, "
        "initialisation and batch order follow it), so runs pair by seed",
    )
    experiments: list[Experiment] = Field(
        min_length=1, description="each BP-free method on its architecture; its BP twin is added automatically"
    )
    data_from: dict[str, Path_] = Field(
        default_factory=dict,
        description="per dataset, a local copy that the download rule imports and checks instead of "
        "downloading (bpfree download NAME --from PATH), e.g. {fashion-mnist: /usr/share/datasets/fashion-mnist}",
    )
    target_fraction: float = Field(
        TARGET_FRACTION,
        gt=0,
        le=1,
        description="the to_target table's target: this fraction of the BP twin's best validation accuracy "
        "(same seed); each run's cost (epochs, time, energy, FLOPs) to first reach it",
    )


# The config sections a run's spec is made of (the settings a RunSpec shares with the config,
# and job_threads, its machine's threads) and those a tuning study reads (the same, and tuning:
# bpfree tune builds its TuneJob of them): a change to one rewrites the run's spec, or makes the
# study stale (the workflow's spec and tune rules take them as params).
RUN_SECTIONS: tuple[str, ...] = (*(f for f in Settings.model_fields if f in RunSpec.model_fields), "job_threads")
STUDY_SECTIONS: tuple[str, ...] = (*RUN_SECTIONS, "tuning")


# -- reading ---------------------------------------------------------------------------------
def parse(model: type[M], data: Any, where: str = "") -> M:
    """``model`` from plain data, or a one-line BpfreeError naming the first thing wrong and
    what is valid. User-given names are quoted (repr): a key may be any text, newlines too."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise BpfreeError(f"{where or model.__name__} must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as err:
        raise BpfreeError(_one_line(model, err, where)) from None


def _one_line(model: type[_Model], err: ValidationError, where: str) -> str:
    first = err.errors(include_url=False)[0]
    loc = list(first["loc"])
    path = _path([where] if where else [], loc)
    if first["type"] == "extra_forbidden":
        owner = _submodel(model, loc[:-1])
        valid = f"valid keys: {', '.join(owner.model_fields)} " if owner is not None else ""
        parent = _path([where] if where else [], loc[:-1])
        return f"unknown key {loc[-1]!r} at {parent}; {valid}(see config/README.md)"
    if first["type"] == "missing":
        return f"{path} is required (see config/README.md)"
    value = first.get("input")
    if first["type"] == "string_pattern_mismatch":  # say what is expected, not the regex
        owner = _submodel(model, loc[:-1])
        field = owner.model_fields.get(loc[-1]) if owner is not None else None
        if field is not None and field.description:
            return f"{path}: expected {field.description}, got {value!r}"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    message = first["msg"].removeprefix("Value error, ").replace("\n", " ")
    return f"{path}: {message}, got {shown}"


def _path(head: list[str], loc: list) -> str:
    """``tuning.search_spaces['\\n']``: names that are not plain words are quoted."""
    text = ".".join(head)
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and part.replace("_", "").replace("-", "").isalnum():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "top level"


def _submodel(model: type[_Model], loc: list) -> type[_Model] | None:
    """The model that owns the key at ``loc`` (to name the valid keys)."""
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the item's model is the list's
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, _Model)]
        if not nested:
            return None
        model = nested[0]
    return model


def load_spec(path: str | Path) -> RunSpec:
    """A run's spec.yaml (as ``bpfree spec`` or the workflow wrote it)."""
    data = read_yaml(path, "spec")
    if isinstance(data, Mapping) and data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise BpfreeError(
            f"{path} has schema_version {data.get('schema_version')!r}; this bpfree reads {SCHEMA_VERSION}"
        )
    try:
        return parse(RunSpec, data)
    except BpfreeError as err:
        raise BpfreeError(f"{path}: {err}") from None


def dump_yaml(model: _Model) -> str:
    """The model with every default filled in, as YAML in field order."""
    data = model.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


# -- derived documents: the JSON schema and the key table --------------------------------------
def json_schema() -> dict[str, Any]:
    """The workflow config's JSON schema (draft 2020-12), derived from :class:`WorkflowConfig`."""
    schema = WorkflowConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_yaml() -> str:
    header = (
        "# GENERATED from bpfree/core/spec.py by `bpfree schema --out workflow/schemas/config.schema.yaml`:\n"
        "# do not edit by hand (tests/test_spec.py fails when it is out of date).\n"
    )
    return header + yaml.safe_dump(json_schema(), sort_keys=False, width=100)


def key_table() -> str:
    """Markdown table of every config key: name, type, default, check, meaning."""
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    _rows(WorkflowConfig, "", rows)
    return "\n".join(rows) + "\n"


def _rows(model: type[_Model], prefix: str, rows: list[str]) -> None:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        nested = annotation if isinstance(annotation, type) and issubclass(annotation, _Model) else None
        if nested is not None:
            rows.append(f"| `{key}` | section | | | {(nested.__doc__ or '').strip().splitlines()[0]} |")
            _rows(nested, key + ".", rows)
            continue
        default = "(required)" if field.is_required() else _show(field.get_default(call_default_factory=True))
        rows.append(
            f"| `{key}` | {_type_name(annotation)} | {default} | {_allowed(field)} | {field.description or ''} |"
        )
        items = get_args(annotation) if get_origin(annotation) is list else ()
        if items and isinstance(items[0], type) and issubclass(items[0], _Model):
            _rows(items[0], key + "[].", rows)  # the keys of each item (experiments[].params)


def _show(value: Any) -> str:
    return "`" + json.dumps(value) + "`"


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "choice"
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace(" | ", " or ").replace("None", "null")


def _allowed(field: Any) -> str:
    parts = []
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >=")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sign} {getattr(meta, attr)}")
        if getattr(meta, "pattern", None):
            parts.append(f"`{meta.pattern}`")
    if get_origin(field.annotation) is Literal:
        parts.append(", ".join(map(str, get_args(field.annotation))))
    return "; ".join(parts)


def describe(model: type[_Model], name: str) -> str:
    """A field's meaning and default, for a command-line flag's help."""
    field = model.model_fields[name]
    text = field.description or name
    if not field.is_required():
        text += f" (default: {json.dumps(field.get_default(call_default_factory=True))})"
    return text.replace("%", "%%")  # argparse formats help with %
