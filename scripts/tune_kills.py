"""Kill ``bpfree tune`` at random moments and resume it: does every rerun complete, with the
uninterrupted study's trials and best value? Prints one row per kill and a summary.

    python scripts/tune_kills.py --kills 10                  # SIGTERM and SIGKILL, 10 each
    python scripts/tune_kills.py --kills 3 --signals SIGKILL --seed 7

Each kill runs, in a fresh folder, ``bpfree tune`` as the workflow runs it (a relative
``--storage results/tuning/.../study.journal`` from the folder, one CPU thread), sends the
signal at a moment drawn uniformly from the uninterrupted command's wall time, then runs the
same command again to its end (a rerun that takes longer than ``--hang-s`` counts as hung)
and compares its journal with the uninterrupted study's: every trial's number, state, params
and value, in order, and the best value. tests/test_tune_stop.py runs it (slow tier)."""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
JOURNAL = "results/tuning/digits/mlp/bp/study.journal"  # relative, as the workflow passes it
TUNING = {"max_epochs": 3, "pruner": "median", "startup_trials": 2, "pruner_startup_trials": 1, "seed": 42}
ARCH = "mlp:16"  # trials in a blink: the kill lands anywhere, startup included
# trials long enough that most of the command's wall time is theirs, so that most random kills
# land inside a trial: what kill_at_random_moments uses (the TPE past its start-up, the median
# pruner at work)
HEAVY = {"max_epochs": 6, "pruner": "median", "startup_trials": 3, "pruner_startup_trials": 2, "seed": 42}
HEAVY_ARCH = "mlp:1024,1024"
IN_A_TRIAL = "in a trial"  # kill_and_resume(when=...): as soon as a trial is running after one has finished


@dataclass
class Outcome:
    signal: str
    at_s: float | None  # seconds after the start (None: when a trial was seen running)
    landed: str  # where the signal found the study
    kill_code: int | None  # the killed command's exit status (75: stopped by its signal)
    rerun_code: int | None
    rerun_s: float
    hung: bool
    trials: list[tuple] = field(default_factory=list)
    best: float | None = None
    stderr: str = ""


def command(where: Path, tuning: dict, n_trials: int, arch: str = ARCH) -> list[str]:
    (where / "config.yaml").write_text(yaml.safe_dump({"tuning": tuning}))
    return [
        sys.executable, "-m", "bpfree", "tune", "--algorithm", "bp", "--dataset", "digits", "--arch", arch,
        "--n-trials", str(n_trials), "--config", "config.yaml", "--device", "cpu", "--threads", "1",
        "--storage", JOURNAL, "--out", str(Path(JOURNAL).with_name("best_params.yaml")),
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def study(where: Path) -> tuple[list[tuple], float | None]:
    """(number, state, params, value) of every trial, and the best value."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(where / JOURNAL)))
    loaded = optuna.load_study(study_name=None, storage=storage)
    trials = [(t.number, t.state.name, t.params, t.value) for t in loaded.trials]
    complete = [t for t in loaded.trials if t.state.name == "COMPLETE"]
    return trials, (loaded.best_value if complete else None)


def uninterrupted(
    where: Path, tuning: dict = TUNING, n_trials: int = 5, arch: str = ARCH
) -> tuple[list[tuple], float | None, float]:
    where.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    args = command(where, tuning, n_trials, arch)
    proc = subprocess.run(args, cwd=where, env=environment(), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the uninterrupted study failed: {proc.stderr.strip().splitlines()[-1:]}")
    trials, best = study(where)
    return trials, best, time.monotonic() - start


def journal_trials(path: Path) -> list:
    """The trials in a journal a worker may be writing (through Optuna's own reader, so that
    this script runs against any bpfree); none while it cannot be read."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        ids = [storage.get_study_id_from_name(s.study_name) for s in storage.get_all_studies()]
        return [t for i in ids for t in storage.get_all_trials(i)]
    except Exception:  # noqa: BLE001  (being created or written)
        return []


def where_it_landed(where: Path, code: int | None) -> str:
    journal = where / JOURNAL
    if code == 0:
        return "after the end"
    if not journal.exists():
        return "before the study"
    trials = journal_trials(journal)
    for trial in trials:
        if trial.state.name == "RUNNING" or (trial.state.name == "WAITING" and "abandoned" in trial.user_attrs):
            epochs = len(trial.intermediate_values)
            return f"in trial {trial.number} (epoch {epochs + 1}, {trial.state.name.lower()} after it)"
    finished = sum(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in trials)
    return f"between trials ({finished} finished)" if trials else "before the first trial"


def kill_and_resume(
    where: Path,
    signum: int,
    *,
    when: float | str = IN_A_TRIAL,
    tuning: dict = TUNING,
    n_trials: int = 5,
    arch: str = ARCH,
    hang_s: float = 180.0,
) -> Outcome:
    """Run the study, send ``signum`` at ``when`` (seconds after the start, or IN_A_TRIAL),
    then run the same command again to its end."""
    where.mkdir(parents=True, exist_ok=True)
    args = command(where, tuning, n_trials, arch)
    proc = subprocess.Popen(args, cwd=where, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.monotonic()
    if when == IN_A_TRIAL:
        while proc.poll() is None and time.monotonic() - start < hang_s:
            trials = journal_trials(where / JOURNAL) if (where / JOURNAL).exists() else []
            if any(t.state.name == "RUNNING" for t in trials) and any(t.state.name == "COMPLETE" for t in trials):
                break
            time.sleep(0.005)
    else:
        time.sleep(max(0.0, float(when) - (time.monotonic() - start)))
    at = None if when == IN_A_TRIAL else round(time.monotonic() - start, 2)
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=hang_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    code = proc.returncode
    landed = where_it_landed(where, code)
    rerun_start = time.monotonic()
    try:
        rerun = subprocess.run(args, cwd=where, env=environment(), capture_output=True, text=True, timeout=hang_s)
        rerun_code, hung, rerun_err = rerun.returncode, False, rerun.stderr
    except subprocess.TimeoutExpired as expired:
        rerun_code, hung, rerun_err = None, True, str(expired.stderr or "")
    outcome = Outcome(
        signal.Signals(signum).name,
        at,
        landed,
        code,
        rerun_code,
        round(time.monotonic() - rerun_start, 1),
        hung,
        stderr=(err.decode(errors="replace") if isinstance(err, bytes) else str(err))[-2000:] + rerun_err[-2000:],
    )
    if rerun_code == 0:
        outcome.trials, outcome.best = study(where)
    return outcome


def kill_at_random_moments(
    where: Path,
    signum: int,
    *,
    kills: int = 10,
    tuning: dict = HEAVY,
    n_trials: int = 6,
    arch: str = HEAVY_ARCH,
    seed: int = 35,
) -> tuple[tuple[list[tuple], float | None], list[Outcome]]:
    """The uninterrupted study (trials, best value), then ``kills`` studies, each killed once at
    a moment drawn uniformly from the uninterrupted command's wall time, then resumed."""
    trials, best, seconds = uninterrupted(where / "reference", tuning, n_trials, arch)
    draw = random.Random(f"{seed}-{signum}")
    outcomes = [
        kill_and_resume(
            where / f"kill{i}",
            signum,
            when=round(draw.uniform(0.2, seconds), 2),
            tuning=tuning,
            n_trials=n_trials,
            arch=arch,
        )
        for i in range(kills)
    ]
    return (trials, best), outcomes


def report(outcomes: list[Outcome], reference: tuple[list[tuple], float | None] | None = None) -> str:
    lines = [f"{'signal':8} {'at (s)':>7}  {'exit':>4} {'rerun':>5} {'rerun s':>7}  {'same':5}  landed"]
    for o in outcomes:
        same = "-" if reference is None else str((o.trials, o.best) == reference)
        rerun = "hung" if o.hung else str(o.rerun_code)
        at = "trial" if o.at_s is None else f"{o.at_s:.2f}"
        lines.append(f"{o.signal:8} {at:>7}  {o.kill_code!s:>4} {rerun:>5} {o.rerun_s:7.1f}  {same:5}  {o.landed}")
        if o.rerun_code != 0 or o.kill_code not in (0, 75, -signal.SIGTERM, -signal.SIGKILL):
            lines += ["    | " + line for line in o.stderr.strip().splitlines()[-12:]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="kills per signal (default 10)")
    parser.add_argument(
        "--signals", nargs="+", default=["SIGTERM", "SIGKILL"], choices=["SIGTERM", "SIGKILL", "SIGINT"]
    )
    parser.add_argument("--n-trials", type=int, default=6)
    parser.add_argument("--seed", type=int, default=35, help="draws the moments")
    parser.add_argument("--where", default=None, help="a folder to work in (default: a temporary one)")
    args = parser.parse_args()
    import tempfile

    where = Path(args.where or tempfile.mkdtemp(prefix="tune-kills-"))
    failures = 0
    for name in args.signals:
        reference, outcomes = kill_at_random_moments(
            where / name, signal.Signals[name], kills=args.kills, n_trials=args.n_trials, seed=args.seed
        )
        trials, best = reference
        print(f"{name}: uninterrupted study {len(trials)} trials, best {best}; in {where / name}")
        print(report(outcomes, reference))
        same = sum((o.trials, o.best) == reference for o in outcomes)
        completed = sum(o.rerun_code == 0 for o in outcomes)
        inside = sum(o.landed.startswith("in trial") for o in outcomes)
        print(f"{name}: {completed}/{len(outcomes)} reruns completed, {same}/{len(outcomes)} the same study, "
              f"{inside} kills inside a trial", flush=True)  # fmt: skip
        failures += len(outcomes) - same
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
