"""The real Fashion-MNIST, offline: Debian's ``dataset-fashion-mnist`` (the original 60,000 +
10,000 IDX files, recompressed) imported through ``bpfree download --from``, checked against
the pinned SHA-256 of the original files, counted, and trained on.

CI installs the package (.ci/run); elsewhere these tests are skipped without it."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_bpfree

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

if not all((DEBIAN / f"{name}.gz").is_file() for name in FILES):
    if os.environ.get("CI"):  # CI installs it: its absence there is a failure, not a skip
        raise RuntimeError(f"{DEBIAN} is missing: .ci/run must apt-get install dataset-fashion-mnist")
    pytest.skip(f"{DEBIAN} missing (apt-get install dataset-fashion-mnist)", allow_module_level=True)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fashion root")
    proc = run_bpfree("download", "fashion-mnist", "--root", str(root), "--from", str(DEBIAN))
    assert proc.returncode == 0, proc.stderr
    return root


def test_the_whole_dataset_is_imported_with_its_original_counts(imported):
    import bpfree.data  # noqa: F401  (registers the datasets)
    from bpfree.core.registry import DATASETS

    raw = DATASETS.get("fashion-mnist").load(imported)
    assert raw.train_x.shape == (60_000, 1, 28, 28) and raw.test_x.shape == (10_000, 1, 28, 28)
    assert np.bincount(raw.train_y, minlength=10).tolist() == [6_000] * 10
    assert np.bincount(raw.test_y, minlength=10).tolist() == [1_000] * 10
    assert 0.0 <= raw.train_x.min() and raw.train_x.max() <= 1.0
    assert abs(float(raw.train_x.mean()) - 0.2860) < 1e-3  # the dataset's published mean


def test_a_copy_with_one_byte_changed_is_refused_and_the_root_is_unchanged(imported, tmp_path):
    bad = tmp_path / "copy"
    shutil.copytree(DEBIAN, bad)
    images = bytearray(gzip.decompress((bad / "train-images-idx3-ubyte.gz").read_bytes()))
    images[123_456] ^= 0x01
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(images), compresslevel=1))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in imported.rglob("*") if p.is_file()}
    proc = run_bpfree("download", "fashion-mnist", "--root", str(imported), "--from", str(bad))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(bad / "train-images-idx3-ubyte.gz") in lines[0]
    assert "expected c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888" in lines[0]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in imported.rglob("*") if p.is_file()}
    assert after == before


def test_a_small_model_learns_the_real_images(imported, tmp_path):
    """BP on a 128-unit MLP, 2 epochs over 54,000 real training images: well above chance
    (10%) and above what a linear read-out of raw pixels gets in an epoch (~80%)."""
    out = tmp_path / "run"
    proc = run_bpfree(
        "train",
        *("--algorithm", "bp", "--dataset", "fashion-mnist", "--arch", "mlp:128", "--seed", "1"),
        *("--data-root", str(imported), "--device", "cpu", "--max-epochs", "2"),
        *("--measure-idle-s", "0", "--measure-codecarbon", "off", "--out", str(out)),
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert metrics["test_accuracy"] >= 0.82


@pytest.mark.slow
def test_the_papers_bp_twin_restores_its_best_accuracy_epoch_through_a_stop_and_resume(imported, tmp_path):
    """``--paper-params`` for BP mlp:1000,1000 on the real Fashion-MNIST: it stops on the
    validation loss but ends with the first epoch of the highest validation accuracy (the
    paper's checkpoint rule); metrics.json holds the test accuracy under each selection rule;
    a SIGTERM after epoch 2 and the same command again end with that choice."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    argv = [
        *("train", "--paper-params", "--algorithm", "bp", "--dataset", "fashion-mnist"),
        *("--arch", "mlp:1000,1000", "--seed", "1", "--data-root", str(imported), "--device", "cpu"),
        *("--max-epochs", "4", "--checkpoint-every-s", "0", "--measure-idle-s", "0"),
        *("--measure-codecarbon", "off", "--out", str(out)),
    ]
    env = {**os.environ, "BPFREE_PROGRESS": "lines"}
    proc = subprocess.Popen([sys.executable, "-m", "bpfree", *argv], stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stderr:  # the job's log, as it is written: one line per epoch
        seen.append(line)
        if "epoch 2/4" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 75, "".join(seen) + rest
    assert "bp train epoch 1/4" in seen[0] and "val_acc" in seen[0]
    again = run_bpfree(*argv)
    assert again.returncode == 0, again.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pieces"] == 2 and metrics["epochs"] == 4
    history = [line.split(",") for line in (out / "history.csv").read_text().splitlines()]
    accuracy = [float(row[history[0].index("val_accuracy")]) for row in history[1:]]
    loss = [float(row[history[0].index("val_loss")]) for row in history[1:]]
    by_selection = metrics["test_accuracy_by_selection"]
    assert set(by_selection) == {"last", "min_val_loss", "max_val_accuracy", "restored_epoch"}
    assert by_selection["restored_epoch"] == metrics["restored_epoch"] == accuracy.index(max(accuracy)) + 1
    assert metrics["epoch_by_selection"]["min_val_loss"] == loss.index(min(loss)) + 1
    assert metrics["test_accuracy"] == by_selection["max_val_accuracy"]
    assert all(0.8 < by_selection[k] < 1 for k in ("last", "min_val_loss", "max_val_accuracy"))
