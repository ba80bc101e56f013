"""Shared fixtures: tiny datasets written in the real on-disk formats that torchvision reads,
each with its own recorded checksums (``ROOT/.bpfree/checksums.json``, as ``bpfree download``
writes for real files), and one real ``bpfree train`` run (a subprocess) that several test
files inspect.

Every image written here encodes its own row index in its pixels, so a test can tell which
source row an image came from after loading, splitting and normalising."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

# The tests' models are tiny and the CI runner (2 cores) is shared with other jobs: OpenMP's
# spinning worker threads then slow such models down many times (measured: 15x). One thread,
# here and in the subprocesses the tests start.
os.environ["OMP_NUM_THREADS"] = "1"
# A run's per-epoch progress lines (bpfree.engine.loop.Progress) stay out of the output the
# tests read; the tests of those lines ask for them (BPFREE_PROGRESS=lines).
os.environ["BPFREE_PROGRESS"] = "off"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import train_argv  # noqa: E402
from hypothesis import settings  # noqa: E402

# Hypothesis: derandomized by default (the same examples on every run, so CI is no lottery:
# a failure found once is found again); HYPOTHESIS_PROFILE=explore draws new, and more, ones.
settings.register_profile("repeatable", derandomize=True, max_examples=150, print_blob=True)
settings.register_profile("explore", max_examples=2000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

torch.set_num_threads(1)

# -- MNIST-style IDX files ---------------------------------------------------------------------
MNIST_TRAIN_ROWS = 10_050  # MNIST's fixed validation tail is 10k rows: 50 remain for training
MNIST_TEST_ROWS = 30
FASHION_TRAIN_ROWS = 200
FASHION_TEST_ROWS = 20


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("SN3 Pascal Vincent") file: 0x0000 magic, type 0x08 (ubyte), ndim, big-endian dims."""
    assert array.dtype == np.uint8
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def index_images(n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w) uint8 images: pixel [0, 0] = i % 256, [0, 1] = i // 256 (the row index),
    [1, :] = 255 (a known bright row), [2, c] = c (a ramp along the width), rest 0."""
    i = np.arange(n)
    x = np.zeros((n, h, w), dtype=np.uint8)
    x[:, 0, 0] = i % 256
    x[:, 0, 1] = i // 256
    x[:, 1, :] = 255
    x[:, 2, :] = np.arange(w, dtype=np.uint8)
    return x


def decode_index(pixels_01: np.ndarray) -> np.ndarray:
    """Row index from images on [0, 1] (N, 1, H, W), the inverse of :func:`index_images`."""
    raw = np.rint(pixels_01[:, 0, 0, :2] * 255).astype(np.int64)
    return raw[:, 0] + 256 * raw[:, 1]


def mnist_label(index: np.ndarray) -> np.ndarray:
    return (index * 7 + 3) % 10  # not the identity, so a label/image mix-up shows


def record_checksums(root: Path, folder: str) -> None:
    """Record the SHA-256 of every file under ``root/folder`` in the root's checksum record."""
    from bpfree.data.checksums import record_files

    record_files(root, sorted(p for p in (root / folder).rglob("*") if p.is_file()))


def write_mnist_like(root: Path, folder: str, n_train: int, n_test: int) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 50_000)):
        images = index_images(n, 28, 28)
        index = np.arange(n) + offset
        images[:, 0, 0], images[:, 0, 1] = index % 256, index // 256
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", mnist_label(index).astype(np.uint8))
    record_checksums(root, folder)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A root holding a tiny MNIST (10,050 train, 30 test) and Fashion-MNIST (200, 20)."""
    root = tmp_path_factory.mktemp("mnist_root")
    write_mnist_like(root, "MNIST", MNIST_TRAIN_ROWS, MNIST_TEST_ROWS)
    write_mnist_like(root, "FashionMNIST", FASHION_TRAIN_ROWS, FASHION_TEST_ROWS)
    return root


# -- CIFAR python pickles ----------------------------------------------------------------------
CIFAR_BATCH_ROWS = 6  # CIFAR-10: five training batches of this many rows
CIFAR_TEST_ROWS = 5
CIFAR100_TRAIN_ROWS = 40


def cifar_rows(index: np.ndarray) -> np.ndarray:
    """(n, 3072) uint8 rows in CIFAR's layout (1024 red, 1024 green, 1024 blue; each plane
    row-major 32x32): red is the row index everywhere, green[h, w] = h, blue[h, w] = 100 + w."""
    n = len(index)
    planes = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    planes[:, 0] = (index % 256)[:, None, None]
    planes[:, 1] = np.arange(32, dtype=np.uint8)[:, None]
    planes[:, 2] = (100 + np.arange(32, dtype=np.uint8))[None, :]
    return planes.reshape(n, 3072)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(root: Path) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for b in range(5):
        index = np.arange(CIFAR_BATCH_ROWS) + b * CIFAR_BATCH_ROWS
        _pickle(
            base / f"data_batch_{b + 1}",
            {
                "batch_label": f"training batch {b + 1} of 5",
                "labels": [int(i) % 10 for i in index],
                "data": cifar_rows(index),
                "filenames": [f"img_{i}.png" for i in index],
            },
        )
    index = np.arange(CIFAR_TEST_ROWS) + 200
    _pickle(
        base / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [int(i) % 10 for i in index],
            "data": cifar_rows(index),
            "filenames": [f"img_{i}.png" for i in index],
        },
    )
    _pickle(
        base / "batches.meta",
        {
            "num_cases_per_batch": CIFAR_BATCH_ROWS,
            "label_names": [f"class{c}" for c in range(10)],
            "num_vis": 3072,
        },
    )
    record_checksums(root, "cifar-10-batches-py")


def write_cifar100(root: Path) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    for name, index in (("train", np.arange(CIFAR100_TRAIN_ROWS)), ("test", np.arange(CIFAR_TEST_ROWS) + 200)):
        _pickle(
            base / name,
            {
                "filenames": [f"img_{i}.png" for i in index],
                "batch_label": name,
                "fine_labels": [int(i) * 3 % 100 for i in index],
                "coarse_labels": [int(i) % 20 for i in index],
                "data": cifar_rows(index),
            },
        )
    _pickle(
        base / "meta",
        {
            "fine_label_names": [f"fine{c}" for c in range(100)],
            "coarse_label_names": [f"coarse{c}" for c in range(20)],
        },
    )
    record_checksums(root, "cifar-100-python")


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A root holding a tiny CIFAR-10 (5 x 6 train rows, 5 test) and CIFAR-100 (40, 5)."""
    root = tmp_path_factory.mktemp("cifar_root")
    write_cifar10(root)
    write_cifar100(root)
    return root


# -- one real end-to-end run -------------------------------------------------------------------
def run_bpfree(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bpfree", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def bp_digits_mlp_run(tmp_path_factory):
    """``bpfree train --algorithm bp --dataset digits --seed 7 --arch mlp:256,256`` in a real
    subprocess; returns (completed process, output dir, metrics dict)."""
    out = tmp_path_factory.mktemp("bp_digits_mlp")
    proc = run_bpfree(*train_argv(seed=7, arch="mlp:256,256", device="cpu", out=out))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    return proc, out, metrics


# -- run records -------------------------------------------------------------------------------
RECORD_DEFAULTS = {
    "schema_version": 1,
    "spec_digest": "0123456789abcdef",
    "best_val_accuracy": None,
    "epochs": 1,
    "resumed": False,
    "pieces": 1,
    "checkpoint_set_aside": None,
    "train_time_s": 1.0,
    "checkpoints": 0,
    "checkpoint_every_s": 60.0,
    "checkpoint_time_s": 0.0,
    "time_per_epoch_s": 1.0,
    "device": "cpu",
    "params": {},
    "early_stopping": {},
    "precision": "fp32",
    "bpfree_version": "0",
    "torch_version": "0",
    "torch_threads": 1,
    "python_version": "3.11",
    "host": "test",
    "finished_at": "2026-01-01T00:00:00+0000",
}


def record(fields: dict) -> dict:
    """A complete metrics.json (a RunRecord) with ``fields`` and plain values for the rest."""
    return {**RECORD_DEFAULTS, "test_accuracy": None, **fields}
