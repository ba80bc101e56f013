"""Several GPU jobs on one machine each claim their own board (issue 17: no two runs on one)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from bpfree.engine import gpus


def test_concurrent_processes_claim_different_boards_and_free_them_on_exit(tmp_path):
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from bpfree.engine.gpus import claim_slot
        print(claim_slot(3, Path({str(tmp_path)!r})), flush=True)
        sys.stdin.readline()  # hold the board until told to go
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        slots = sorted(int(p.stdout.readline()) for p in procs)
        assert slots == [0, 1, 2]
    finally:
        for p in procs:
            p.communicate("\n", timeout=30)
    # every holder has exited: its lock went with it
    gpus.release()
    assert gpus.claim_slot(3, tmp_path) == 0
    assert gpus.claim_slot(3, tmp_path) == 0  # the same process keeps its board
    gpus.release()


def test_auto_on_a_machine_with_several_gpus_claims_one(monkeypatch, tmp_path):
    import torch

    from bpfree.engine.setup import resolve_device

    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    gpus.release()
    try:
        assert resolve_device("auto") == torch.device("cuda", 0) == resolve_device("cuda")
        assert (tmp_path / "gpu0.lock").exists()
        assert resolve_device("cuda:3") == torch.device("cuda", 3)  # a fixed board is not claimed
    finally:
        gpus.release()


def test_measured_jobs_hold_a_gpu_wherever_they_compute_on_one(monkeypatch):
    from bpfree.workflow import grid as workflow

    monkeypatch.setattr(workflow, "visible_gpus", lambda: 0)
    assert workflow.gpus_per_job("cpu") == 0 and workflow.gpus_per_job("auto") == 0
    assert workflow.gpus_per_job("cuda") == 1 and workflow.gpus_per_job("cuda:1") == 1
    monkeypatch.setattr(workflow, "visible_gpus", lambda: 4)
    assert workflow.gpus_per_job("auto") == 1 and workflow.gpus_per_job("cpu") == 0


def test_visible_gpus_honours_cuda_visible_devices(monkeypatch):
    from bpfree.workflow.grid import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == 0
