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
