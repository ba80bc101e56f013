"""A killed `bpfree train` resumes from its checkpoint and ends as the uninterrupted run does;
a corrupt checkpoint is set aside, never a crash loop; a diverged run's metrics stay JSON."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import train_argv

# every test here trains in subprocesses, killing and resuming them: the slow tier
pytestmark = pytest.mark.slow

CASES = {  # algorithm -> (arch, epoch to die after): multi-stage ones die inside a later stage
    "mf": ("mlp:32,32", 7),
    "ff": ("mlp:32,32", 3),
    "cafo-dfa": ("cnn:4,8,8", 4),
}
# the pass over the training data to die half-way through: a later stage of mf and cafo
# trains on cached features, not on passes over the data, so these die in its first stage
MID_PASS = {"mf": 4, "ff": 4, "cafo-dfa": 3}
HOOKS = Path(__file__).parent / "hooks"
COMPARED = ["epoch", "stage", "train_loss", "val_loss", "val_accuracy"]  # not time or energy


def train(out: Path, algorithm: str, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("BPFREE_TEST_KILL_AT_EPOCH", None)
    if kill is not None:  # tests/hooks/sitecustomize.py kills the process there
        env["BPFREE_TEST_KILL_AT_EPOCH"] = kill
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOOKS), env.get("PYTHONPATH")]))
    return subprocess.run(command(out, algorithm), env=env, capture_output=True, text=True, timeout=120)


def command(out: Path, algorithm: str, checkpoint_every_s: float = 0) -> list[str]:
    arch, _ = CASES[algorithm]
    cmd = [
        sys.executable,
        "-m",
        "bpfree",
        *train_argv(
            algorithm=algorithm,
            seed=3,
            arch=arch,
            max_epochs=6,
            threads=1,
            measure_codecarbon="off",
            measure_idle_s=0,
            checkpoint_every_s=checkpoint_every_s,
            out=out,
        ),
    ]
    if algorithm == "cafo-dfa":
        cmd += ["--params", str(out.parent / "dfa.yaml")]
        (out.parent / "dfa.yaml").write_text("dfa_epochs: 3\n")
    return cmd


def history(out: Path) -> list[list[str]]:
    with open(out / "history.csv") as fh:
        return [[row[c] for c in COMPARED] for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run of each algorithm, trained once for the module."""
    runs: dict[str, Path] = {}

    def get(algorithm: str) -> Path:
        if algorithm not in runs:
            out = tmp_path_factory.mktemp(algorithm) / "reference"
            done = train(out, algorithm)
            assert done.returncode == 0, done.stderr
            runs[algorithm] = out
        return runs[algorithm]

    return get


@pytest.mark.parametrize("algorithm", list(CASES))
@pytest.mark.parametrize("where", ["after", "write", "mid"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted, algorithm, where):
    _, epoch = CASES[algorithm]
    reference = uninterrupted(algorithm)

    killed = tmp_path / "killed"
    # after epoch N's checkpoint; half-way through writing it; half-way through an epoch
    hook = {"after": str(epoch), "write": f"write:{epoch}", "mid": f"mid:{MID_PASS[algorithm]}"}[where]
    died = train(killed, algorithm, kill=hook)
    assert died.returncode == -signal.SIGKILL
    assert (killed / "checkpoint.pt").exists() and not (killed / "metrics.json").exists()

    resumed = train(killed, algorithm)
    assert resumed.returncode == 0, resumed.stderr
    assert history(killed) == history(reference)
    metrics = json.loads((killed / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert metrics["test_accuracy"] == expected["test_accuracy"]
    assert metrics["resumed"] is True and metrics["pieces"] == 2
    # energy and time are summed over both pieces: about the uninterrupted run's, not a part
    assert metrics["energy_covers"] == "sum of 2 pieces, each up to its last checkpoint"
    assert [p["piece"] for p in metrics["pieces_measured"]] == [1, 2]
    assert metrics["energy_source"] == expected["energy_source"] == "estimate"
    pieces_j = sum(p["energy_j"] for p in metrics["pieces_measured"])
    assert metrics["energy_j"] == pytest.approx(pieces_j)
    # each piece's FIT window is opened by its caller around the loop, whose own timer is
    # train_time_s: the windows cover it and the call's set-up (well under 10 ms a piece)
    assert sum(p["time_s"] for p in metrics["pieces_measured"]) <= metrics["train_time_s"] + 0.01 * metrics["pieces"]
    epochs_j = sum(float(row["energy_j"]) for row in csv.DictReader(open(killed / "history.csv")))
    assert epochs_j <= metrics["energy_j"] < epochs_j * 5  # every epoch's energy is in the sum
    assert not (killed / "checkpoint.pt").exists()  # removed once the run is complete


@pytest.mark.parametrize("algorithm", ["mf", "cafo-dfa"])
def test_sigterm_mid_epoch_checkpoints_exits_75_and_resumes(tmp_path, uninterrupted, algorithm):
    """SLURM's stop: SIGTERM from outside half-way through an epoch, with no periodic
    checkpoint due (60 s): the run writes one within a few seconds and exits 75; the same
    command then ends with the uninterrupted run's history."""
    reference = uninterrupted(algorithm)
    out, ready = tmp_path / "stopped", tmp_path / "mid-epoch"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "BPFREE_TEST_PAUSE_AT": str(MID_PASS[algorithm]),
        "BPFREE_TEST_PAUSE_FILE": str(ready),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")])),
    }
    env.pop("BPFREE_TEST_KILL_AT_EPOCH", None)
    cmd = command(out, algorithm, checkpoint_every_s=60)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), proc.communicate()
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 75, stderr
    assert took < 5, f"exit {took:.1f} s after SIGTERM"
    assert "SIGTERM: checkpoint written after epoch" in stderr and "the same command resumes" in stderr
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()

    env.pop("BPFREE_TEST_PAUSE_AT")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert history(out) == history(reference)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == json.loads((reference / "metrics.json").read_text())["test_accuracy"]
    assert metrics["pieces"] == 2 and len(metrics["pieces_measured"]) == 2
    assert not (out / "checkpoint.pt").exists()


def test_corrupt_checkpoint_is_set_aside_and_the_run_starts_afresh(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"\x80\x02 truncated")
    done = train(out, "mf")
    assert done.returncode == 0, done.stderr
    assert "unreadable" in done.stderr and "set aside" in done.stderr
    assert len(list(out.glob("checkpoint.pt.corrupt-*"))) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pieces"] == 1 and metrics["status"] == "ok"


def test_diverged_metrics_are_strict_json(tmp_path):
    from bpfree.core.io import write_json_atomic

    write_json_atomic(tmp_path / "m.json", {"test_accuracy": float("nan"), "loss": [1.0, float("inf")]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == {
        "test_accuracy": None,
        "loss": [1.0, None],
    }


def test_out_of_memory_names_the_batch_size_and_architecture(tmp_path, monkeypatch):
    import torch

    from bpfree.algorithms.bp import Backprop
    from bpfree.core.errors import BpfreeError
    from bpfree.core.spec import RunSpec
    from bpfree.engine.run import train as train_run

    def exhausted(self, stage, batches):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Backprop, "train_epoch", exhausted)
    cfg = RunSpec(algorithm="bp", dataset="digits", seed=1, arch="mlp:16", params={"batch_size": 64})
    with pytest.raises(BpfreeError, match=r"out of memory .* bp mlp:16 with batch size 64"):
        train_run(cfg, tmp_path / "run")


def test_atomic_writes_leave_files_readable_by_others_and_no_temporaries(tmp_path):
    import stat

    from bpfree.core.io import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "table.csv", "a,b\n")
    finally:
        os.umask(old)
    # mkstemp's 0600 would hide results from the rest of a cluster group
    assert stat.S_IMODE((tmp_path / "table.csv").stat().st_mode) & 0o044 == 0o044
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
