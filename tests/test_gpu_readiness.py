"""What a first GPU run needs that a CPU can show (issue 17): ``bpfree train`` starting where
the workflow's, tuning's and figures' packages and CodeCarbon are missing; CIFAR batches
augmented without a host-device copy per batch, and the same as ever; the warm-up touching
no random generator; every wording of out-of-memory recognised."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bpfree.core.errors import is_out_of_memory
from bpfree.data import Batches, Split
from bpfree.data.batches import draw_crop_flip

ROOT = Path(__file__).resolve().parents[1]

# what a site's PyTorch module lacks, and `bpfree train` must not need
OPTIONAL = ("jsonschema", "optuna", "codecarbon", "snakemake", "polars", "altair")


def blocking_env(tmp_path: Path, blocked=OPTIONAL) -> dict[str, str]:
    """An environment whose Python cannot find ``blocked``, as if they were not installed: a
    sitecustomize on PYTHONPATH swaps the path finder on the meta path for one that does not
    see them, so that ``import name`` raises ModuleNotFoundError and
    ``importlib.util.find_spec(name)`` answers None, as for a missing package (torch and
    scikit-learn probe for some packages those ways)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            from importlib.machinery import PathFinder

            BLOCKED = {tuple(blocked)!r}

            class _NotInstalled(PathFinder):
                @classmethod
                def find_spec(cls, name, path=None, target=None):
                    if name.split(".")[0] in BLOCKED:
                        return None
                    return super().find_spec(name, path, target)

            sys.meta_path[:] = [_NotInstalled if f is PathFinder else f for f in sys.meta_path]
            for name in BLOCKED:
                sys.modules.pop(name, None)
            """
        )
    )
    path = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": ""}


def test_the_blocker_blocks(tmp_path):
    code = "import importlib.util; assert importlib.util.find_spec('optuna') is None; import polars"
    proc = subprocess.run([sys.executable, "-c", code], env=blocking_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode != 0 and "ModuleNotFoundError: No module named 'polars'" in proc.stderr


@pytest.mark.slow
def test_train_runs_without_the_optional_packages(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bpfree.cli", "train", "--algorithm", "bp", "--dataset", "digits", "--seed", "1"]
    cmd += ["--arch", "mlp:16", "--max-epochs", "1", "--measure-idle-s", "0", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, env=blocking_env(tmp_path), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert metrics["codecarbon_error"] == "codecarbon not installed"  # its absence stated


def test_every_command_registers_without_the_optional_packages(tmp_path):
    # `bpfree --help` builds every subcommand's parser: none may import a heavy package to do so
    code = "from bpfree.cli import build_parser; build_parser().parse_args(['train', '--help'])"
    proc = subprocess.run([sys.executable, "-c", code], env=blocking_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--algorithm" in proc.stdout


# -- CIFAR augmentation (issue 17 #6) --------------------------------------------------------
def cifar_like(n: int = 70) -> Split:
    g = torch.Generator().manual_seed(3)
    return Split(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_augmented_batches_are_the_same_as_before_for_a_seed():
    split = cifar_like()
    batches = Batches(split, seed=11, augment=True)
    reference = torch.Generator().manual_seed(11)
    for _ in range(2):  # the generator carries over from epoch to epoch, as a checkpoint keeps it
        new = list(batches.epoch(32))  # 32, 32, 6: a short last batch
        old = list(old_epoch(split, reference, 32))
        assert [len(y) for _, y in new] == [32, 32, 6]
        for (x_new, y_new), (x_old, y_old) in zip(new, old, strict=True):
            assert torch.equal(y_new, y_old) and torch.equal(x_new, x_old)
    assert torch.equal(batches.generator.get_state(), reference.get_state())


def old_epoch(split: Split, generator: torch.Generator, batch_size: int):
    """The previous implementation, verbatim in substance (per-batch draws, then gather)."""
    import torch.nn.functional as F

    n = len(split)
    order = torch.randperm(n, generator=generator).to(split.x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        x = split.x.index_select(0, idx)
        b, c, h, w = x.shape
        padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
        dy = torch.randint(0, 9, (b,), generator=generator).to(x.device)
        dx = torch.randint(0, 9, (b,), generator=generator).to(x.device)
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        rows = dy[:, None] + torch.arange(h)
        cols = dx[:, None] + torch.arange(w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        batch = torch.arange(b)[:, None, None, None]
        chan = torch.arange(c)[None, :, None, None]
        yield padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]], split.y.index_select(0, idx)


def test_an_epoch_copies_and_draws_once_not_per_batch():
    from torch.overrides import TorchFunctionMode

    class Calls(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.names: list[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    batches = Batches(cifar_like(200), seed=0, augment=True)
    epoch = batches.epoch(16)  # 13 batches
    with Calls() as calls:
        next(epoch)
    up_front = list(calls.names)
    with Calls() as calls:
        rest = list(epoch)
    assert len(rest) == 12
    assert {"randint", "rand", "randperm"} <= set(up_front)
    per_batch = set(calls.names)
    assert not per_batch & {"to", "randint", "rand", "randperm", "cpu", "cuda"}, per_batch


def test_drawn_parameters_are_offsets_and_flips():
    params = draw_crop_flip(1000, torch.Generator().manual_seed(0))
    assert params.shape == (3, 1000) and params.dtype == torch.uint8
    assert params[:2].max() == 8 and params[:2].min() == 0 and set(params[2].tolist()) == {0, 1}


# -- the warm-up (issue 17 #3) ---------------------------------------------------------------
def test_warm_up_draws_nothing_from_the_global_generator():
    from bpfree.engine.warmup import _conv_block, warm_up

    torch.manual_seed(5)
    before = torch.get_rng_state()
    warm_up(torch.device("cpu"))
    _conv_block(torch.device("cpu"))  # the cuDNN warm-up's ops, on the CPU
    assert torch.equal(torch.get_rng_state(), before)


def test_warm_up_on_a_gpu_loads_cublas_and_cudnn_forward_and_backward(monkeypatch):
    import torch.nn.functional as F

    from bpfree.engine import warmup

    ran = []
    for name in ("conv2d", "batch_norm", "max_pool2d"):
        real = getattr(F, name)
        monkeypatch.setattr(F, name, lambda *a, _real=real, _name=name, **k: ran.append(_name) or _real(*a, **k))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: ran.append("sync"))
    # torch.ones(..., device=cuda) cannot run here: the same ops on the CPU stand in
    real_ones, real_full, real_zeros = torch.ones, torch.full, torch.zeros
    monkeypatch.setattr(torch, "ones", lambda *a, device=None, **k: real_ones(*a, **k))
    monkeypatch.setattr(torch, "full", lambda *a, device=None, **k: real_full(*a, **k))
    monkeypatch.setattr(torch, "zeros", lambda *a, device=None, **k: real_zeros(*a, **k))
    warmup.warm_up(torch.device("cuda"))
    assert ran == ["conv2d", "batch_norm", "max_pool2d", "sync"]


# -- out of memory in every wording (issue 17 #12) --------------------------------------------
@pytest.mark.parametrize(
    "err",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory"),
        MemoryError(),
    ],
)
def test_out_of_memory_is_recognised_in_every_wording(err):
    assert is_out_of_memory(err)


@pytest.mark.parametrize(
    "err",
    [
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        ValueError("out of memory"),  # not an error torch raises for memory
    ],
)
def test_other_errors_are_not_out_of_memory(err):
    assert not is_out_of_memory(err)


# -- scripts/gpu_check.py (issue 17 #4, #5) --------------------------------------------------
def gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(run: str, counter_j, polled_j, problems=()) -> dict:
    diff = (polled_j - counter_j) / counter_j if counter_j and polled_j is not None else None
    return {"run": run, "counter_j": counter_j, "polled_j": polled_j, "polled_vs_counter": diff, "problems": problems}


def test_gpu_check_calls_a_counter_that_read_0_j_a_disagreement():
    verdict = gpu_check_module().verdict
    stuck = row(
        "bp",
        None,
        812.0,
        ("gpu nvml-counter: read 0 J over 10.000 s (...); not used (the next source gives the energy)",),
    )
    assert "DISAGREE" in verdict([row("(matmul reference)", 2000.0, 2010.0), stuck], None)
    assert "AGREE on all 2 runs" in verdict([row("a", 100.0, 101.0), row("b", 200.0, 203.0)], None)
    assert "no counter-vs-polling comparison" in verdict([row("a", None, 101.0)], "total-energy counter unavailable")


def test_gpu_check_compares_only_windows_long_enough():
    """NVML's polled power is a ~1 s average: over a 2 s window it reads low whatever the
    counter's quality, so such a row is shown, not judged."""
    module = gpu_check_module()
    short = row("cafo-rand", 100.0, 70.0) | {"long_enough": False}
    assert "no counter-vs-polling comparison possible" in module.verdict([short], None)
    assert "raise --seconds" in module.verdict([short], None)
    line = module.verdict([row("bp", 1000.0, 1010.0) | {"long_enough": True}, short], None)
    assert "AGREE on all 1 runs of 8 s or more" in line and "1 shorter run(s) not compared" in line
    instant = row("mf", 1000.0, 1020.0) | {"long_enough": True, "instant_vs_counter": -0.01}
    assert "instantaneous power within 1.0% (worst: mf)" in module.verdict([instant], None)


def test_gpu_check_sizes_its_runs_from_a_steady_epoch(monkeypatch):
    """The first epoch of a fit carries one-off work: each stage's last (steady) epoch of the
    sizing fit gives the time of one round of stages."""
    from types import SimpleNamespace

    from bpfree.engine import loop as training

    module = gpu_check_module()
    epochs = [("a", 5.0), ("a", 1.0), ("b", 3.0), ("b", 2.0)]
    history = [SimpleNamespace(stage=stage, epoch_time_s=t) for stage, t in epochs]
    monkeypatch.setattr(training, "fit", lambda *a, **k: SimpleNamespace(history=history))
    monkeypatch.setattr(module, "epoch_params", lambda name, n: {})
    monkeypatch.setattr("bpfree.algorithms.build_algorithm", lambda *a, **k: None)
    round_s, _ = module.steady_round_s("bp", SimpleNamespace(info=None), torch.device("cpu"))
    assert round_s == 3.0  # 1.0 + 2.0, not 5.0 + 3.0


@pytest.mark.slow
def test_gpu_check_runs_its_whole_path_on_the_cpu_without_optional_packages(tmp_path):
    # what a GPU machine would run, minus the GPU: catches a broken call before the GPU does
    absent = OPTIONAL + ("psutil", "scipy", "sklearn", "pynvml", "torchvision", "pandas")
    cmd = [sys.executable, str(ROOT / "scripts/gpu_check.py"), "--device", "cpu", "--seconds", "0.3"]
    cmd += ["--idle-seconds", "0.1", "--train-size", "128", "--eval-size", "128", "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=blocking_env(tmp_path, absent), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out/gpu_check.json").read_text())
    errors = {r["run"]: r["error"] for r in report["rows"] if "error" in r}
    assert not errors, errors
    assert {r["run"] for r in report["rows"]} >= {"(matmul reference)", "bp", "ff", "mf", "cafo-rand", "cafo-dfa"}
    assert report["wall_s"] < 120
    # every row ran in bpfree train's fp32 context, its flags recorded
    assert report["precision_flags"]["cublas_allow_tf32"] is False and not report["precision_flags"]["cudnn_allow_tf32"]
    assert all(
        r["precision_flags"] == report["precision_flags"] for r in report["rows"] if r["run"] != "(matmul reference)"
    )


def test_gpu_check_skips_what_would_pass_its_budget(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts/gpu_check.py"), "--device", "cpu", "--seconds", "0.2", "--idle-seconds"]
    cmd += ["0", "--train-size", "64", "--eval-size", "64", "--budget-s", "1", "--no-codecarbon", "--algorithms", "bp"]
    proc = subprocess.run(cmd, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bp: skipped" in proc.stdout and "over --budget-s 1" in proc.stdout


def test_a_gpu_index_beyond_those_visible_is_one_line(monkeypatch):
    import torch

    from bpfree.core.errors import BpfreeError
    from bpfree.engine.setup import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1").index == 1
    with pytest.raises(BpfreeError, match=r"'cuda:2' asked for, but 2 GPU\(s\) are visible .*valid: cuda:0 to cuda:1"):
        resolve_device("cuda:2")
