"""``bpfree tune`` stopped by a signal or killed (issue 35): the running trial is abandoned
(back in the study's queue, its params kept, not counted) and run again first when the same
command resumes, so that the study ends with the trials and best value of an uninterrupted
one; the journal's locks die with their worker, relative journal paths included.

The fast tier stops a study in-process (the signal raised at the start of an epoch, through
``bpfree tune``'s own handler) and kills one subprocess; the slow tier kills real ``bpfree
tune`` processes with SIGTERM and SIGKILL at random moments (scripts/tune_kills.py, which
prints its figures)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import tune_argv

from bpfree.algorithms.bp import Backprop
from bpfree.cli import main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import tune_kills  # noqa: E402  (scripts/, on the path above)

# TPE past its random start-up and the median pruner at work: what a resumed study must
# draw and decide as the uninterrupted one did
TUNING = tune_kills.TUNING


def study(journal: Path) -> tuple[list[tuple], float]:
    """The study's trials (number, state, params, value) and its best value."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    loaded = optuna.load_study(study_name=None, storage=storage)
    trials = [(t.number, t.state.name, t.params, t.value) for t in loaded.trials]
    return trials, loaded.best_value


def tune_args(where: Path, n_trials: int = 5) -> list[str]:
    config = where / "config.yaml"
    config.write_text(yaml.safe_dump({"tuning": TUNING}))
    storage = where / tune_kills.JOURNAL
    return tune_argv(
        "--config", str(config), "--device", "cpu", "--threads", "1",
        arch=tune_kills.ARCH, n_trials=n_trials, storage=storage, out=storage.with_name("best_params.yaml"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[list[tuple], float]:
    where = tmp_path_factory.mktemp("uninterrupted")
    assert main(tune_args(where)) == 0
    return study(where / tune_kills.JOURNAL)


def signal_at_epoch(monkeypatch, nth: int, signum: int = signal.SIGTERM) -> None:
    """Raise ``signum`` (through the installed handler) as the ``nth`` epoch of the study begins."""
    epochs, original = [0], Backprop.train_epoch

    def train_epoch(self, stage, batches):
        epochs[0] += 1
        if epochs[0] == nth:
            signal.raise_signal(signum)
        return original(self, stage, batches)

    monkeypatch.setattr(Backprop, "train_epoch", train_epoch)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_abandons_the_running_trial_and_the_study_resumes_as_uninterrupted(
    tmp_path, capsys, monkeypatch, uninterrupted, signum
):
    journal = tmp_path / tune_kills.JOURNAL
    with monkeypatch.context() as patched:
        signal_at_epoch(patched, 6, signum)  # trial 2's epochs 1 and 2 were done: its third
        assert main(tune_args(tmp_path)) == 75  # EX_TEMPFAIL, as bpfree train's stop
    err = capsys.readouterr().err.strip().splitlines()
    name = signal.Signals(signum).name
    assert err[-1].startswith(f"bpfree tune: {name}: trial ") and "abandoned after" in err[-1]
    assert "the same command resumes the study (exit 75)" in err[-1]
    trials = optuna.load_study(
        study_name=None,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))),
    ).trials
    stopped = trials[-1]
    assert stopped.state == optuna.trial.TrialState.WAITING  # not FAIL: not one of the n_trials
    assert stopped.user_attrs["abandoned"][0]["by"] == name and stopped.user_attrs["worker"] == {}

    assert main(tune_args(tmp_path)) == 0
    assert study(journal) == uninterrupted  # the same trials, in order, and the same best value


def test_a_stop_signal_before_any_trial_stops_cleanly(tmp_path, capsys, monkeypatch):
    import bpfree.tuning.job

    def load_splits(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(bpfree.tuning.job, "load_splits", load_splits)
    assert main(tune_args(tmp_path)) == 75
    assert "SIGTERM: no trial was running; the same command resumes the study" in capsys.readouterr().err


def test_a_sigkilled_tune_with_a_relative_journal_path_resumes_to_the_same_study(tmp_path, uninterrupted):
    """One kill in a trial, as the workflow runs it (a relative --storage from its folder):
    the rerun neither hangs on a lock (Optuna's symlink lock dangled there) nor loses the trial."""
    outcome = tune_kills.kill_and_resume(tmp_path, signal.SIGKILL, when=tune_kills.IN_A_TRIAL, tuning=TUNING)
    assert outcome.rerun_code == 0 and not outcome.hung, outcome
    assert outcome.landed.startswith("in trial"), outcome
    assert (outcome.trials, outcome.best) == uninterrupted


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_ten_kills_at_random_moments_each_resume_to_the_uninterrupted_study(tmp_path, signum):
    """Trials long enough (a 1024x1024 MLP, up to 6 epochs) that most kills land inside one."""
    reference, outcomes = tune_kills.kill_at_random_moments(tmp_path, signum, kills=10, seed=35)
    print(tune_kills.report(outcomes, reference))
    for outcome in outcomes:
        assert outcome.rerun_code == 0 and not outcome.hung, outcome
        assert (outcome.trials, outcome.best) == reference, outcome
    if signum == signal.SIGTERM:
        # 75: stopped by bpfree's handler; -15: before it was armed (starting up) or after the
        # study held all its trials (ending: the handler put back, nothing left to lose)
        def nothing_running(o) -> bool:
            return (
                o.landed.startswith("before the study") or o.landed == f"between trials ({len(reference[0])} finished)"
            )

        codes = {(o.kill_code, nothing_running(o)) for o in outcomes}
        assert codes <= {(75, False), (75, True), (0, False), (0, True), (-signal.SIGTERM, True)}, outcomes


def test_a_dangling_symlink_lock_left_by_an_older_bpfree_is_taken_over(tmp_path):
    """The lock Optuna's JournalFileSymlinkLock leaves when its holder is SIGKILLed, as the
    workflow's relative paths made it: a link to ``results/.../study.journal`` that resolves
    from its own folder, hence dangles. It is removed, not waited on for ever."""
    folder = tmp_path / "results/tuning/digits/mlp/bp"
    folder.mkdir(parents=True)
    os.symlink("results/tuning/digits/mlp/bp/study.journal", folder / "study.journal.lock")
    from bpfree.core.journal import writers_lock

    start = time.monotonic()
    with writers_lock(folder / "study.journal"):
        pass
    assert time.monotonic() - start < 5 and not (folder / "study.journal.lock").is_symlink()


def test_a_storage_name_too_long_for_what_is_written_beside_it_is_one_line(tmp_path, capsys):
    """A name near 255 bytes made Optuna's lock rename fail (two tracebacks) and left a lock
    that hung the next worker; refused now before any work. The longest name allowed works,
    a damaged journal's set-aside copy (the longest name written beside it) included."""
    storage = tmp_path / ("s" * 240 + ".journal")
    args = tune_argv(arch="mlp:8", storage=storage, out=tmp_path / "best.yaml")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its file name is 248 bytes; at most 209" in err
    assert not storage.exists()

    longest = tmp_path / ("s" * 201 + ".journal")
    args = tune_argv("--device", "cpu", "--max-epochs", "1", arch="mlp:8", storage=longest, out=tmp_path / "b.yaml")
    assert main(args) == 0
    with open(longest, "ab") as fh:
        fh.write(b'{"op_code": 99, "worker_id": "w"}\n')
    args[args.index("--n-trials") + 1] = "2"
    assert main(args) == 0
    assert "set aside as" in capsys.readouterr().err and len(list(tmp_path.glob("s*.journal.corrupt-*"))) == 1
