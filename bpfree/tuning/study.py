"""A study: created or joined in its journal, its sampler and pruner, its identity (a study
resumed or joined with other settings is refused), and its trial counts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from bpfree.core.errors import BpfreeError
from bpfree.core.journal import quiet_optuna
from bpfree.core.spec import RunSpec, Tuning
from bpfree.tuning.journal import WholeLinesJournal
from bpfree.tuning.space import SearchSpace

OBJECTIVE = "val_accuracy"  # the final model's accuracy on the validation split, maximised


@dataclass(frozen=True)
class StudyCounts:
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int = 0  # abandoned (a stop signal, a killed worker) or enqueued: run next, not yet counted

    @property
    def finished(self) -> int:
        """Trials that ended, whatever their end: what ``n_trials`` counts, as Optuna's
        ``study.optimize(n_trials=N)`` does."""
        return self.complete + self.pruned + self.failed

    @classmethod
    def of(cls, study: optuna.Study) -> StudyCounts:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        return cls(
            states.count(TrialState.COMPLETE),
            states.count(TrialState.PRUNED),
            states.count(TrialState.FAIL),
            states.count(TrialState.RUNNING),
            states.count(TrialState.WAITING),
        )


# -- the study in its journal -------------------------------------------------------------------
def open_study(storage: str | Path, study_name: str, settings: Tuning, max_resource: int | None = None) -> optuna.Study:
    """Create the study, or load it when the journal already holds it (resume, or join).
    ``max_resource``: a trial's epoch budget, every stage counted (hyperband's)."""
    path = Path(storage)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = WholeLinesJournal(str(path))
    except OSError as err:
        raise BpfreeError(f"cannot open the journal {path}: {err.strerror}") from None
    return optuna.create_study(
        storage=optuna.storages.JournalStorage(backend),
        study_name=study_name,
        direction="maximize",
        sampler=make_sampler(settings, 0),
        pruner=make_pruner(settings, max_resource),
        load_if_exists=True,
    )


def make_sampler(settings: Tuning, trials_so_far: int) -> optuna.samplers.TPESampler:
    """TPE for the study's next trial, seeded with the ``trials_so_far``-th number of a stream
    seeded by the study's seed: a resumed study draws what an uninterrupted one would have,
    instead of replaying its first random draws."""
    seed = int(np.random.default_rng(settings.seed).integers(2**32, size=trials_so_far + 1)[-1])
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=settings.multivariate,
        n_startup_trials=settings.startup_trials,
        constant_liar=True,  # workers in parallel do not all sample the same point
    )


def sample_params(study: optuna.Study, settings: Tuning, space: SearchSpace, number: int) -> dict[str, Any]:
    """The params trial ``number`` draws: asked of an in-memory copy of the study (its trials,
    its pruner, its name: what the sampler sees), with the sampler of that trial, so that the
    trial can then be added to the journal whole, in one line (``Study.add_trial``), instead of
    created and given its params one line at a time: a worker killed in between left a trial
    with some params, which no resumed study could draw again as the uninterrupted one did."""
    with quiet_optuna():
        copy = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            study_name=study.study_name,
            directions=study.directions,
            sampler=make_sampler(settings, number),
            pruner=study.pruner,
        )
    copy.add_trials(study.get_trials(deepcopy=False))
    return copy.ask(space.distributions).params


def make_pruner(settings: Tuning, max_resource: int | None = None) -> optuna.pruners.BasePruner:
    """The study's pruner. Steps are epochs counted from 1 over all stages of a trial.

    - median: a trial below the median of earlier trials at the same epoch stops
      (``pruner_startup_trials`` finish first; epochs up to ``pruner_warmup_epochs`` are safe).
    - successive-halving (ASHA): rungs at epochs w, w*r, w*r^2, ... (w = warmup + 1, r =
      ``pruner_reduction_factor``); at each rung only the top 1/r of the trials that reached it
      go on.
    - hyperband: several successive-halving brackets, from aggressive to none, with the
      resource running from w to ``max_resource`` epochs (the trial's epoch budget; Optuna
      estimates it from the first complete trial when None). A trial's bracket is fixed by
      the study name and trial number, so a resumed study keeps its brackets.
    """
    warmup = settings.pruner_warmup_epochs + 1  # the first epoch that may be pruned
    rate = settings.pruner_reduction_factor
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup, reduction_factor=rate)
    if settings.pruner == "hyperband":
        top = "auto" if max_resource is None else max(int(max_resource), warmup)
        return optuna.pruners.HyperbandPruner(min_resource=warmup, max_resource=top, reduction_factor=rate)
    # Optuna's warmup protects steps < n_warmup_steps
    return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials, n_warmup_steps=warmup)


def study_identity(spec: RunSpec, device_type: str, space: SearchSpace, score: str = "final_model") -> dict[str, Any]:
    """What makes a study this study: the identity its trials share as runs (the study's spec
    before any sampled params: algorithm, dataset, the tuning seed, architecture, the other
    params' defaults, early stopping, precision, and the device type, as a run's identity
    has it), the search space and what a trial's value is (its score)."""
    identity = {**spec.identity(device_type), "search_space": space.describe(), "score": score}
    # YAML round trip: what was stored (JSON in the journal) compares equal to what is asked
    return yaml.safe_load(yaml.safe_dump(identity))


def check_identity(study: optuna.Study, identity: dict[str, Any], storage: str | Path) -> None:
    """A study resumed or joined with other settings (another device type included) would mix
    incomparable trials: refused in one line naming what differs."""
    stored = study.user_attrs.get("bpfree")
    if stored is None:
        study.set_user_attr("bpfree", identity)
        study.set_user_attr("objective", OBJECTIVE)
        return
    for key, value in identity.items():
        if stored.get(key) != value:
            raise BpfreeError(
                f"study {study.study_name!r} in {storage} was started with {key} "
                f"{stored.get(key)!r}, not {value!r}; use another --study-name or --storage"
            )
