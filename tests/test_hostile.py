"""A hostile or careless user (issue 26): each of the eleven things that broke, repeated as
written, now gives one line or the right behaviour.

 1. two trainings in one run folder: the second is refused naming the holder, or waits
 2. aggregate takes run paths literally (``g[1]``, ``h?``), no wildcards
 3. YAML alias bombs, deep nesting and huge files are refused before anything is built
 4. a finished run of another specification is never overwritten
 5. a checkpoint that unpickles but does not fit the run is set aside, the run starts fresh
 6. a full disk: one line naming the file, nothing half-written, the journal never cut
 7. ``--threads 100000``: one line
 8. files that are not UTF-8: one line
 9. output paths of the wrong kind: one line, before any work
10. aggregate checks its inputs: a truncated or binary history, a missing one, a run twice
11. a seed of 2^64: one line

and stale temporary files of interrupted writes are cleaned up. The fuzz test that throws
generated bad files and paths at the CLI is at the end (slow tier)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import polars as pl
import pytest
import torch
import yaml
from conftest import record
from helpers import FAST_TRAIN, train_argv, tune_argv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpfree.core.io
import bpfree.engine.run
import bpfree.tuning.job
import bpfree.tuning.journal
from bpfree.cli import main
from bpfree.core.errors import BpfreeError
from bpfree.core.io import MAX_YAML_BYTES, WriteFailed, read_yaml, write_json_atomic
from bpfree.tuning.journal import WholeLinesJournal

FAST = [*FAST_TRAIN, "--checkpoint-every-s", "0"]


def train_args(out, *extra: str, seed: str = "3", algorithm: str = "bp") -> list[str]:
    return train_argv(*FAST, *extra, out=out, algorithm=algorithm, seed=seed)


def cli(capsys, args: list[str]) -> tuple[int, str, str]:
    """``bpfree ARGS`` in this process: (exit code, stdout, stderr); stderr is at most one
    line and never a traceback."""
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own refusal (bpfree's one-line parser error)
        code = exit_.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) <= 1 and "Traceback" not in err, err
    return code, out, err.strip()


def refused(capsys, args: list[str], *expected: str) -> str:
    code, _, err = cli(capsys, args)
    assert code == 2, err
    assert err.startswith("bpfree: error: "), err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def no_work(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(bpfree.engine.run, "load_splits", started)
    monkeypatch.setattr(bpfree.tuning.job, "load_splits", started)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished bp run (digits, mlp:8, 2 epochs, seed 3); copy it, never change it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(train_args(out)) == 0
    return out


def copy_run(finished: Path, where: Path) -> Path:
    shutil.copytree(finished, where)
    return where


# -- 1. one process per run folder ----------------------------------------------------------
HOLD = """
import sys
from bpfree.engine import runfolder
with runfolder.hold(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def holder(folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_training_in_a_held_run_folder_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    proc = holder(out)
    try:
        err = refused(capsys, train_args(out, seed="4"), f"run folder {out} is in use by pid {proc.pid} on host ")
        assert "--wait" in err
        assert not (out / "metrics.json").exists() and not (out / "spec.yaml").exists()
    finally:
        proc.communicate("\n", timeout=30)


def test_with_wait_the_second_training_waits_for_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    proc = holder(out)
    let_go = threading.Timer(1.5, lambda: proc.communicate("\n", timeout=30))
    let_go.start()
    start = time.monotonic()
    code, printed, err = cli(capsys, train_args(out, "--wait"))
    let_go.join()
    assert code == 0 and time.monotonic() - start >= 1.0
    assert "in use by" in err and "waiting (--wait)" in err
    assert json.loads((out / "metrics.json").read_text())["pieces"] == 1


def test_a_lock_dies_with_its_process_so_sigkill_leaves_none(tmp_path, capsys):
    out = tmp_path / "run"
    proc = holder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (out / ".bpfree.lock").exists()  # left behind, but nobody holds it
    code, _, _ = cli(capsys, train_args(out))
    assert code == 0
    assert not (out / ".bpfree.lock").exists()  # a clean end removes it


@pytest.mark.slow
def test_two_bpfree_trains_started_together_in_one_folder(tmp_path):
    """Item 1 as written: ``bpfree train ... --out d & bpfree train ... --seed 4 --out d``."""
    out = tmp_path / "d"
    # long enough to hold the folder while the second starts (an idle baseline would not: this
    # machine's counters are estimates, which take none): 400 epochs, no early stop
    long = ["--max-epochs", "400", "--set", "early_stopping.patience=400"]
    first = subprocess.Popen(
        [sys.executable, "-m", "bpfree", *train_args(out, *long)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / ".bpfree.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(
        [sys.executable, "-m", "bpfree", *train_args(out, seed="4")], capture_output=True, text=True, timeout=300
    )
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"is in use by pid {first.pid} on host" in lines[0], second.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    spec = yaml.safe_load((out / "spec.yaml").read_text())
    assert metrics["seed"] == spec["seed"] == 3 and metrics["pieces"] == 1 and metrics["resumed"] is False


# -- 2 and 10. aggregate: literal paths, each input checked ------------------------------------
def write_run(folder: Path, seed: int, val_loss: float, algorithm: str = "bp", history: bool = True) -> Path:
    folder.mkdir(parents=True)
    fields = {"algorithm": algorithm, "arch": "mlp:8", "dataset": "digits", "seed": seed, "status": "ok"}
    write_json_atomic(folder / "metrics.json", record(fields | {"test_accuracy": 0.9}))
    if history:
        header = "epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s\n"
        (folder / "history.csv").write_text(header + f"1,train,1.0,{val_loss},0.5,0.1\n")
    return folder / "metrics.json"


def summary(capsys, tmp_path, *metrics: Path) -> pl.DataFrame:
    out = tmp_path / "summary.csv"
    code, _, err = cli(capsys, ["aggregate", *map(str, metrics), "--summary", str(out)])
    assert code == 0, err
    return pl.read_csv(out, glob=False)


def test_aggregate_takes_a_run_folder_named_with_brackets_literally(tmp_path, capsys):
    write_run(tmp_path / "g1", 1, 0.111)
    bracket = write_run(tmp_path / "g[1]", 1, 0.999)
    assert summary(capsys, tmp_path, bracket)["min_val_loss"].to_list() == [0.999]


def test_aggregate_takes_a_question_mark_literally(tmp_path, capsys):
    for i in (1, 2, 3):
        write_run(tmp_path / f"h{i}", i, 0.1 * i)
    literal = write_run(tmp_path / "h?", 9, 0.5)
    code, _, err = cli(capsys, ["aggregate", str(literal), "--out-dir", str(tmp_path / "tables")])
    assert code == 0, err
    histories = pl.read_csv(tmp_path / "tables" / "histories.csv")
    assert histories["seed"].to_list() == [9] and histories["val_loss"].to_list() == [0.5]


def test_a_run_given_twice_is_refused(tmp_path, capsys):
    metrics = write_run(tmp_path / "a", 1, 0.5)
    refused(capsys, ["aggregate", str(metrics), str(metrics), "--summary", str(tmp_path / "s.csv")], "given twice")
    # the same run in two folders (a copy) would count as two seeds
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    refused(
        capsys,
        ["aggregate", str(metrics), str(tmp_path / "b" / "metrics.json"), "--out-dir", str(tmp_path / "t")],
        "two runs of bp mlp:8 on digits seed 1",
        "give each run once",
    )
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "t" / "summary.csv").exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            b"epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s\n1,train,1.0,0.5,0.5,0.1\n2,tra",
            "row 2 has 2 of 6",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", "is not UTF-8 text"),
        (b"a,b\n1,2\n", "does not begin with the columns epoch,stage"),
        (b"epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s\n1,train,x,0.5,0.5,0.1\n", "train_loss is 'x'"),
        (b"epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s\n3,train,1,0.5,0.5,0.1\n", "is epoch '3', not 1"),
    ],
    ids=["truncated row", "binary", "other columns", "text for a number", "epochs not from 1"],
)
def test_a_malformed_history_is_refused_naming_file_and_row(tmp_path, capsys, content, expected):
    metrics = write_run(tmp_path / "r", 1, 0.5)
    (tmp_path / "r" / "history.csv").write_bytes(content)
    refused(capsys, ["aggregate", str(metrics), "--summary", str(tmp_path / "s.csv")], "run history ", expected)


def test_a_missing_history_is_one_warning_and_the_run_stays(tmp_path, capsys):
    kept = write_run(tmp_path / "a", 1, 0.5)
    bare = write_run(tmp_path / "b", 2, 0.5, history=False)
    out = tmp_path / "s.csv"
    code, _, err = cli(capsys, ["aggregate", str(kept), str(bare), "--summary", str(out)])
    assert code == 0
    assert err.startswith("bpfree: warning: ") and f"{tmp_path / 'b' / 'history.csv'} is missing" in err
    frame = pl.read_csv(out)
    assert frame["seed"].to_list() == [1, 2] and frame["min_val_loss"].to_list() == [0.5, None]


# -- 3 and 8. YAML with limits; text that is not UTF-8 ------------------------------------------
def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    with pytest.raises(BpfreeError, match=r"expands to more than 100000 values \(aliases followed\)"):
        read_yaml(path)
    # a few aliases (what yaml.safe_dump writes for a shared list) are fine
    path.write_text("a: &x [1, 2]\nb: *x\n")
    assert read_yaml(path) == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a: &a [1, *a]\n", "a YAML alias refers to itself"),
        ("[" * 100 + "]" * 100 + "\n", "nests lists or mappings too deeply"),
        ("[" * 1500 + "]" * 1500 + "\n", "nests lists or mappings too deeply"),
        ("a: !!python/object:os.system {}\n", "is not valid YAML"),
    ],
    ids=["recursive", "deep", "very deep", "python tag"],
)
def test_other_yaml_that_would_blow_up_is_one_line(tmp_path, text, expected):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(BpfreeError, match=expected):
        read_yaml(path)


def test_alias_bombs_in_params_spec_and_search_spaces_are_one_line(tmp_path, capsys, finished, no_work):
    params = tmp_path / "params.yaml"
    params.write_text(alias_bomb())
    refused(capsys, train_args(tmp_path / "a", "--params", str(params)), "expands to more than 100000 values")
    # a spec.yaml whose params are a bomb
    run = copy_run(finished, tmp_path / "run")
    spec = (run / "spec.yaml").read_text()
    bomb = "".join("  " + line + "\n" for line in alias_bomb().splitlines())
    (run / "spec.yaml").write_text(spec.replace("params:\n", "params:\n" + bomb, 1))
    refused(capsys, ["train", "--spec", str(run / "spec.yaml"), "--out", str(run)], "expands to more than")
    # tuning.search_spaces in a config, for bpfree tune
    config = tmp_path / "config.yaml"
    config.write_text(
        "tuning:\n  search_spaces:\n    bp:\n" + "".join("      " + line + "\n" for line in alias_bomb().splitlines())
    )
    tune = tune_argv("--config", str(config), arch="mlp:8", storage=tmp_path / "s.journal", out=tmp_path / "best.yaml")
    refused(capsys, tune, "expands to more than")


@pytest.mark.slow
def test_an_alias_bomb_in_the_workflow_config_stops_snakemake_in_one_line(tmp_path):
    """``snakemake -n`` with a bomb in tuning.search_spaces: Snakemake reads the file itself
    (aliases stay shared there); the Snakefile then reads it through bpfree's reader."""
    from test_workflow import REPO, snakemake

    config = (REPO / "config" / "config.yaml").read_text()
    bomb = "".join("      " + line + "\n" for line in alias_bomb().splitlines())
    (tmp_path / "bomb.yaml").write_text(config.replace("  search_spaces:\n", "  search_spaces:\n    bp:\n" + bomb, 1))
    proc = snakemake("-n", "--cores", "1", "--configfile", "bomb.yaml", cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert f"bpfree: config error: config {tmp_path / 'bomb.yaml'}: its YAML expands to more than 100000" in proc.stderr
    assert "Traceback" not in proc.stderr and "Building DAG" not in proc.stdout + proc.stderr


def test_a_huge_params_file_is_refused_without_reading_it(tmp_path, capsys, no_work):
    params = tmp_path / "params.yaml"
    with open(params, "wb") as fh:
        fh.truncate(200 * 1024 * 1024)  # 200 MB, sparse
    refused(capsys, train_args(tmp_path / "a", "--params", str(params)), f"more than the {MAX_YAML_BYTES}")
    refused(capsys, train_args(tmp_path / "b", "--params", "/dev/zero"), "/dev/zero is not a regular file")


@pytest.mark.parametrize("flag", ["--params", "--config", "--spec"])
def test_a_file_that_is_not_utf8_is_one_line(tmp_path, capsys, flag, no_work):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("lr: 0.1  # réglé\n".encode("latin-1"))
    args = ["train", "--spec", str(path), "--out", str(tmp_path / "o")] if flag == "--spec" else None
    args = args or train_args(tmp_path / "o", flag, str(path))
    refused(capsys, args, "is not UTF-8 text (byte 0xe9 at offset 12)")


def test_a_metrics_json_that_is_not_utf8_or_nests_deeply_is_one_line(tmp_path, capsys):
    metrics = tmp_path / "r" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_bytes(b'{"a": "\xff"}')
    refused(capsys, ["aggregate", str(metrics), "--summary", str(tmp_path / "s.csv")], "is not UTF-8 text")
    metrics.write_text("[" * 100_000 + "]" * 100_000)
    refused(capsys, ["aggregate", str(metrics), "--summary", str(tmp_path / "s.csv")], "nests lists or objects too")


# -- 4. a finished run of another specification -------------------------------------------------
def test_a_finished_run_of_another_spec_is_refused_not_overwritten(tmp_path, capsys, finished):
    run = copy_run(finished, tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in ("metrics.json", "history.csv")}
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    spec["algorithm"], spec["params"] = "ff", {}
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    refused(
        capsys,
        ["train", "--spec", str(run / "spec.yaml"), "--out", str(run)],
        f"{run} holds a finished run of another specification (bp mlp:8 on digits seed 3",
        "give another --out, or remove",
    )
    assert {name: (run / name).read_bytes() for name in before} == before
    # the same command with the flags, another seed
    refused(capsys, train_args(run, seed="4"), "holds a finished run of another specification")
    # a metrics.json this bpfree cannot read is not overwritten either
    (run / "metrics.json").write_text("{}")
    refused(capsys, train_args(run), "holds a metrics.json this bpfree cannot read")


# -- 5. a checkpoint that does not fit ----------------------------------------------------------
@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, finished):
    """A run folder whose run was stopped after its last epoch's checkpoint, before its
    outputs: (folder, the uninterrupted run's test accuracy)."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    original = bpfree.engine.run.write_outputs

    def killed(run, out):
        raise KeyboardInterrupt

    bpfree.engine.run.write_outputs = killed
    try:
        assert main(train_args(out)) == 130
    finally:
        bpfree.engine.run.write_outputs = original
    assert (out / "checkpoint.pt").exists()
    return out, json.loads((finished / "metrics.json").read_text())["test_accuracy"]


def tamper(state: dict, how: str) -> None:
    net = state["algorithm"]["net"]
    if how == "stage_index 99":
        state["stage_index"] = 99
    elif how == "tensor of the wrong shape":
        net[next(iter(net))] = torch.zeros(3, 3)
    elif how == "history of the wrong type":
        state["history"] = {"epoch": 1}
    elif how == "rng state of the wrong size":
        state["rng"]["torch"] = torch.zeros(7, dtype=torch.uint8)
    elif how == "optimiser state of the wrong shape":
        moments = next(iter(state["algorithm"]["extra"]["optimizer"]["state"].values()))
        name = next(k for k, v in moments.items() if isinstance(v, torch.Tensor) and v.dim() > 0)
        moments[name] = torch.zeros(2)
    elif how == "negative epochs":
        state["stage_epochs"] = -1


@pytest.mark.parametrize(
    "how",
    [
        "stage_index 99",
        "tensor of the wrong shape",
        "history of the wrong type",
        "rng state of the wrong size",
        "optimiser state of the wrong shape",
        "negative epochs",
    ],
)
def test_a_checkpoint_that_does_not_fit_is_set_aside_and_the_run_starts_fresh(tmp_path, capsys, interrupted, how):
    folder, accuracy = interrupted
    run = copy_run(folder, tmp_path / "run")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    tamper(state, how)
    torch.save(state, run / "checkpoint.pt")
    code, _, err = cli(capsys, train_args(run))
    assert code == 0
    assert f"checkpoint {run / 'checkpoint.pt'} does not fit this run (" in err and "starting afresh" in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pieces"] == 1 and metrics["status"] == "ok"
    assert metrics["test_accuracy"] == accuracy  # as the uninterrupted run, not 0.08
    assert metrics["checkpoint_set_aside"].startswith("checkpoint.pt.corrupt-")
    # and the next rerun has nothing to do: no crash loop
    assert cli(capsys, train_args(run))[0] == 0


def test_an_untouched_checkpoint_still_resumes(tmp_path, capsys, interrupted):
    folder, accuracy = interrupted
    run = copy_run(folder, tmp_path / "run")
    code, _, err = cli(capsys, train_args(run))
    assert code == 0 and err == ""
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pieces"] == 2 and metrics["test_accuracy"] == accuracy


def test_stale_temporaries_of_interrupted_writes_are_removed(tmp_path, capsys, interrupted):
    folder, _ = interrupted
    run = copy_run(folder, tmp_path / "run")
    stale = run / ".checkpoint.pt.k3j_x9q2.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = run / "notes.tmp"  # not one of ours
    other.write_text("mine")
    code, _, err = cli(capsys, train_args(run))
    assert code == 0
    assert "removed 1 temporary file(s) of interrupted writes" in err and stale.name in err
    assert not stale.exists() and other.exists()


# -- 6. out of space ------------------------------------------------------------------------------
class FullDisk:
    """``os.fdopen`` and ``os.write`` as on a full disk, for files whose name holds ``name``:
    half the bytes go out, then ENOSPC."""

    def __init__(self, monkeypatch, name: str) -> None:
        self.name = name
        real_fdopen, real_write = os.fdopen, os.write

        class Half:
            def __init__(self, fh):
                self.fh = fh

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, attr):
                return getattr(self.fh, attr)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

        def fdopen(fd, *args, **kwargs):
            fh = real_fdopen(fd, *args, **kwargs)
            target = os.readlink(f"/proc/self/fd/{fd}")
            return Half(fh) if name in os.path.basename(target) else fh

        def write(fd, data):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if name in os.path.basename(target):
                real_write(fd, bytes(data[: len(data) // 2]))
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(bpfree.core.io.os, "fdopen", fdopen)
        monkeypatch.setattr(bpfree.tuning.journal.os, "write", write)


@pytest.mark.parametrize(
    "name, what", [("checkpoint.pt", "the run's checkpoint"), ("history.csv", "the run's history")]
)
def test_a_full_disk_in_train_is_one_line_and_a_rerun_recovers(tmp_path, capsys, monkeypatch, name, what):
    run = tmp_path / "run"
    with monkeypatch.context() as patched:
        FullDisk(patched, name)
        err = refused(capsys, train_args(run), f"no space left on the device writing {what} to {run / name}")
        assert "free space and run the same command again" in err
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # nothing half-written
    assert not (run / "metrics.json").exists()
    code, _, _ = cli(capsys, train_args(run))
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["pieces"] == (2 if name == "history.csv" else 1)


def test_a_full_disk_never_cuts_the_journals_last_line(tmp_path, monkeypatch):
    path = tmp_path / "study.journal"
    journal = WholeLinesJournal(str(path))
    journal.append_logs([{"op_code": 0, "worker_id": "a", "study_name": "s", "directions": [1]}])
    whole = path.read_bytes()
    FullDisk(monkeypatch, "study.journal")
    with pytest.raises(WriteFailed, match=f"no space left on the device writing the tuning journal to {path}"):
        journal.append_logs([{"op_code": 4, "worker_id": "a", "study_id": 0, "datetime_start": "x" * 100}])
    assert path.read_bytes() == whole  # the half-written entry is cut back, not left half
    monkeypatch.undo()
    optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(WholeLinesJournal(str(path))))


@pytest.mark.slow
def test_a_real_full_disk_tmpfs(tmp_path, capsys):
    """On a real full file system (a tmpfs of 1 MiB; needs root, skipped elsewhere): train
    says so in one line and leaves nothing half-written; the journal keeps whole lines."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
    try:
        run = mount / "run"
        with open(mount / "filler", "wb", buffering=0) as fh:  # fill it, then free 12 KiB
            for chunk in (65536, 4096):
                try:
                    while True:
                        fh.write(b"\0" * chunk)
                except OSError:
                    pass
        os.truncate(mount / "filler", os.path.getsize(mount / "filler") - 3 * 4096)
        code, _, err = cli(capsys, train_args(run, "--arch", "mlp:64"))
        assert code == 2 and "no space left on the device writing" in err, err
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
        journal = WholeLinesJournal(str(mount / "study.journal"))
        with pytest.raises(WriteFailed, match="no space left on the device writing the tuning journal"):
            for i in range(10_000):
                journal.append_logs([{"op_code": 0, "worker_id": "a", "study_name": f"s{i}", "directions": [1]}])
        data = (mount / "study.journal").read_bytes()
        assert data.endswith(b"\n") and all(json.loads(line) for line in data.splitlines())
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- 7 and 11. ranges: threads and seeds ---------------------------------------------------------
def test_threads_beyond_the_range_are_one_line(tmp_path, capsys, no_work):
    refused(capsys, train_args(tmp_path / "a", "--threads", "100000"), "threads", "less than or equal to 1024")
    tune = tune_argv(threads=100000, storage=tmp_path / "s.journal", out=tmp_path / "b.yaml")
    refused(capsys, tune, "machine.threads", "less than or equal to 1024")
    refused(capsys, ["bench", "--threads", "100000"], "--threads must be from 1 to 1024")
    config = tmp_path / "c.yaml"
    config.write_text("job_threads: 100000\n")
    refused(capsys, train_args(tmp_path / "c", "--config", str(config)), "job_threads")


def test_a_seed_of_2_to_the_64_is_one_line(tmp_path, capsys, no_work):
    big = str(2**64)
    refused(capsys, train_args(tmp_path / "a", seed=big), "seed: Input should be less than or equal to")
    tune = tune_argv(seed=big, storage=tmp_path / "s.journal", out=tmp_path / "b.yaml")
    refused(capsys, tune, "tuning.seed: Input should be less than or equal to")
    refused(capsys, train_argv(command="spec", seed=big, out=tmp_path / "s"))


# -- 9. output paths of the wrong kind, before any work -------------------------------------------
TUNE = tune_argv(arch="mlp:8")


@pytest.mark.parametrize(
    "args, expected",
    [
        (TUNE + ["--storage", "s.journal", "--out", "adir"], "--out adir is a directory; give a file path"),
        (TUNE + ["--storage", "adir", "--out", "b.yaml"], "--storage adir is a directory; give a file path"),
        (TUNE + ["--storage", "s.journal", "--out", "b.yaml", "--trials-out", "adir"], "--trials-out adir is a"),
        (TUNE + ["--storage", "s.journal", "--out", ""], "--out is empty"),
        (train_argv(command="train", seed=1, out=""), "--out is empty"),
        (train_argv(command="train", seed=1, out="afile"), "afile is a file"),
        (
            train_argv(command="spec", seed=1, out="afile/spec.yaml"),
            "the directory of --out afile is a file",
        ),
        (train_argv(command="spec", seed=1, out=""), "--out is empty"),
        (["aggregate", "m.json", "--out-dir", "afile"], "--out-dir afile is a file, not a directory"),
        (["aggregate", "m.json", "--summary", "adir"], "--summary adir is a directory"),
        (["aggregate", "m.json", "--out-dir", ""], "--out-dir is empty"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_an_output_path_of_the_wrong_kind_is_one_line_before_any_work(
    tmp_path, capsys, monkeypatch, no_work, args, expected
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("a file")
    write_run(tmp_path / "r", 1, 0.5)
    os.symlink("r/metrics.json", tmp_path / "m.json")
    refused(capsys, args, expected)
    assert not (tmp_path / "s.journal").exists()  # no study: no trial ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "m.json", "r"]  # nothing written


@pytest.mark.parametrize("name", ["metrics.json", "spec.yaml", "history.csv", "checkpoint.pt"])
def test_a_run_file_existing_as_a_directory_is_refused_before_training(tmp_path, capsys, no_work, name):
    (tmp_path / "run" / name).mkdir(parents=True)
    refused(capsys, train_args(tmp_path / "run"), f"{tmp_path / 'run' / name} is a directory, but a run writes")


# -- the fuzz: bad files and paths at the CLI ------------------------------------------------------
def mutations(data: bytes):
    """Bad versions of a good file: cut short, bytes flipped, not UTF-8, an alias bomb,
    nested deeply, emptied, another file's bytes, or random bytes."""
    return st.one_of(
        st.integers(0, max(len(data) - 1, 0)).map(lambda n: data[:n]),
        st.tuples(st.integers(0, max(len(data) - 1, 0)), st.binary(min_size=1, max_size=8)).map(
            lambda t: data[: t[0]] + t[1] + data[t[0] + len(t[1]) :]
        ),
        st.just(data + b"\n\xff\xfe"),
        st.just(alias_bomb().encode()),
        st.integers(60, 3000).map(lambda n: b"[" * n + b"]" * n),
        st.just(b""),
        st.binary(max_size=200),
        st.sampled_from([b"- 1\n", b"null\n", b"a: [1, *b]\n", b"{a: 1, a: 2}\n", b"a: !!binary AAA=\n", b"\x00"]),
    )


def fuzz_case(capsys, args: list[str], allowed=(0, 2)) -> None:
    code, _, err = cli(capsys, args)  # at most one line, no traceback
    assert code in allowed, err
    if code == 2:
        assert err.startswith("bpfree") and ": error: " in err, err


@pytest.mark.slow
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_bad_files_at_the_cli_never_a_traceback(tmp_path_factory, capsys, finished, data):
    """Params, spec, config, metrics and history files, mutated; each thrown at the command
    that reads it: exit 2 with one line, or (where the file is usable) exit 0."""
    where = tmp_path_factory.mktemp("fuzz")
    kind = data.draw(st.sampled_from(["params", "spec", "config", "metrics", "history"]))
    run = copy_run(finished, where / "run")
    good = {
        "params": b"lr: 0.01\nbatch_size: 32\n",
        "spec": (run / "spec.yaml").read_bytes(),
        "config": (Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_bytes(),
        "metrics": (run / "metrics.json").read_bytes(),
        "history": (run / "history.csv").read_bytes(),
    }[kind]
    bad = data.draw(mutations(good))
    if kind in ("params", "config"):
        path = where / f"{kind}.yaml"
        path.write_bytes(bad)
        # a usable params or config trains; keep it short and out of the finished folder
        fuzz_case(capsys, train_args(where / "out", f"--{kind}", str(path)))
    elif kind == "spec":
        (run / "spec.yaml").write_bytes(bad)
        (run / "metrics.json").unlink()  # else "already trained" or "another spec" answers first
        fuzz_case(capsys, ["train", "--spec", str(run / "spec.yaml"), "--out", str(where / "out"), "--threads", "1"])
    else:
        (run / f"{kind}.json" if kind == "metrics" else run / "history.csv").write_bytes(bad)
        fuzz_case(capsys, ["aggregate", str(run / "metrics.json"), "--summary", str(where / "s.csv")])
        if kind == "metrics":  # and a run folder holding it: never overwritten, one line
            fuzz_case(capsys, train_args(run), allowed=(0, 2))


@pytest.mark.slow
@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_bad_checkpoints_are_set_aside_never_a_traceback(tmp_path_factory, capsys, interrupted, data):
    """A checkpoint's bytes mutated, or one of its values replaced by another type or size:
    the run resumes (it fits) or sets it aside in one line and trains afresh; exit 0."""
    folder, _ = interrupted
    run = copy_run(folder, tmp_path_factory.mktemp("fuzz") / "run")
    if data.draw(st.booleans()):
        raw = (run / "checkpoint.pt").read_bytes()
        (run / "checkpoint.pt").write_bytes(data.draw(mutations(raw)))
    else:
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        keys = ["stage_index", "stage_epochs", "handlers", "algorithm", "batches", "rng", "history"]
        keys += ["train_time_s", "pieces", "checkpoints", "checkpoint_time_s", "measured", "extra"]
        key = data.draw(st.sampled_from(keys))
        value = data.draw(
            st.one_of(
                st.none(),
                st.integers(-(2**70), 2**70),
                st.floats(),
                st.text(max_size=5),
                st.lists(st.integers(), max_size=3),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                st.integers(0, 4).map(lambda n: torch.zeros(n, dtype=torch.uint8)),
            )
        )
        state[key] = value
        torch.save(state, run / "checkpoint.pt")
    fuzz_case(capsys, train_args(run), allowed=(0,))
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.slow
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.one_of(
        st.sampled_from(
            ["", ".", "/dev/null", "/proc/self", "afile", "afile/x", "adir", "/dev/zero/x", "r/metrics.json"]
        ),
        # relative, never climbing out of the test's directory
        st.text(alphabet="ab[]?*/~ \n-", min_size=1, max_size=12).map(lambda s: s.lstrip("/") or "a"),
    ),
    command=st.sampled_from(
        ["train", "spec", "tune --out", "tune --storage", "aggregate --out-dir", "aggregate --summary"]
    ),
)
def test_fuzz_bad_paths_at_the_cli_never_a_traceback(tmp_path_factory, capsys, monkeypatch, no_work, path, command):
    """Output paths of every kind at every command that writes: one line and exit 2, or
    accepted (and then no work was done before the check: the data is never read here)."""
    where = tmp_path_factory.mktemp("paths")
    monkeypatch.chdir(where)
    (where / "adir").mkdir()
    (where / "afile").write_text("a file")
    metrics = write_run(where / "r", 1, 0.5)
    args = {
        # FLAG=PATH: a path may begin with "-" ("-?"), which argparse takes for a flag otherwise
        "train": [*train_argv(command="train", seed=1), f"--out={path}"],
        "spec": [*train_argv(command="spec", seed=1), f"--out={path}"],
        "tune --out": TUNE + ["--storage", "s.journal", f"--out={path}"],
        "tune --storage": TUNE + [f"--storage={path}", "--out", "b.yaml"],
        "aggregate --out-dir": ["aggregate", str(metrics), f"--out-dir={path}"],
        "aggregate --summary": ["aggregate", str(metrics), f"--summary={path}"],
    }[command]
    try:
        fuzz_case(capsys, args)
    except AssertionError as err:
        if "work started before the input was checked" not in str(err):
            raise
        # the path was accepted and the command went on to its work: right for a good path
