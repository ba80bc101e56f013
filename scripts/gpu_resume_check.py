#!/usr/bin/env python3
"""Stop a real ``bpfree train`` with SIGTERM half-way through an epoch, as SLURM does, then
run the same command again (part ``resume`` of scripts/gpu_first_run.sh). Checks that the
stopped run exited with 75 within a few seconds with a checkpoint and no metrics.json, that
the same command resumed it (``pieces: 2``), and that its history equals the uninterrupted
run's (``--reference``: a run folder of the same command; trained here first without one).
On a GPU an unequal history is reported, not failed: cuDNN and atomics need not repeat
bit for bit; on a CPU it must be equal.

    python3 scripts/gpu_resume_check.py --device cuda --work DIR [--reference DIR] [--out FILE]

The signal is sent from outside, at a known point: the child is ``bpfree train`` started
through a small launcher that writes a file half-way through the ``--pause-pass``-th pass
over the training data and waits there (at most 60 s) for the signal."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ["epoch", "stage", "train_loss", "val_loss", "val_accuracy"]
STOPPED_EXIT_CODE = 75  # bpfree.engine.loop.STOPPED_EXIT_CODE (not imported: the child runs it)
LAUNCH = """
import os, sys, time
sys.path.insert(0, os.environ["BPFREE_ROOT"])
from bpfree.engine import loop as training
target, ready, passes, epoch = int(os.environ["BPFREE_PAUSE_PASS"]), os.environ["BPFREE_PAUSE_FILE"], [0], training.TimedBatches.epoch
def pausing(self, batch_size, **kwargs):
    passes[0] += 1
    half = -(-len(self) // batch_size) // 2
    for i, item in enumerate(epoch(self, batch_size, **kwargs)):
        if passes[0] == target and i == half:
            open(ready, "w").close()
            deadline = time.monotonic() + 60
            while training.STOP.signal is None and time.monotonic() < deadline:
                time.sleep(0.02)
        yield item
training.TimedBatches.epoch = pausing
from bpfree.cli import main
sys.exit(main(sys.argv[1:]))
"""


def train_args(args, out: Path) -> list[str]:
    return [
        "train",
        "--algorithm",
        args.algorithm,
        "--dataset",
        "digits",
        "--seed",
        "1",
        "--max-epochs",
        str(args.max_epochs),
        *(["--arch", args.arch] if args.arch else []),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--measure-idle-s",
        "0",
        "--measure-codecarbon",
        "off",
        "--out",
        str(out),
    ]


def history(out: Path) -> list[list[str]]:
    with open(out / "history.csv") as fh:
        return [[row[c] for c in COMPARED] for row in csv.DictReader(fh)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--algorithm", default="mf")
    p.add_argument("--max-epochs", type=int, default=5)
    p.add_argument("--arch", help="default: the algorithm's own")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--pause-pass", type=int, default=3, help="the pass over the training data to stop in")
    p.add_argument("--work", required=True, help="a folder for the run folders")
    p.add_argument("--reference", help="the uninterrupted run's folder (same command); trained here if not given")
    p.add_argument("--out", help="write the findings here (JSON)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BPFREE_ROOT": str(ROOT), "PYTHONUNBUFFERED": "1"}
    report: dict = {"algorithm": args.algorithm, "device": args.device, "pause_pass": args.pause_pass}

    reference = Path(args.reference) if args.reference else None
    if reference is None or not (reference / "history.csv").exists():
        reference = work / "uninterrupted"
        shutil.rmtree(reference, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "bpfree", *train_args(args, reference)], env=env, timeout=300)
        report["reference_exit_code"] = done.returncode

    stopped, ready = work / "stopped", work / "mid-epoch"
    shutil.rmtree(stopped, ignore_errors=True)  # a re-run starts afresh
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", LAUNCH, *train_args(args, stopped)]
    child_env = {**env, "BPFREE_PAUSE_PASS": str(args.pause_pass), "BPFREE_PAUSE_FILE": str(ready)}
    proc = subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    report["reached_mid_epoch"] = ready.exists()
    if ready.exists():
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        report["exit_s_after_signal"] = round(time.monotonic() - sent, 2)
    else:
        proc.kill()
        _, stderr = proc.communicate()
    report["stopped_exit_code"] = proc.returncode
    report["stopped_stderr_tail"] = stderr[-1500:]
    report["checkpoint_written"] = (stopped / "checkpoint.pt").exists()
    report["metrics_written_by_stopped_run"] = (stopped / "metrics.json").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "bpfree", *train_args(args, stopped)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report["resumed_exit_code"] = resumed.returncode
    report["resumed_stderr_tail"] = resumed.stderr[-1500:]
    metrics_path = stopped / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    report["pieces"] = metrics.get("pieces")
    report["pieces_measured"] = metrics.get("pieces_measured")
    report["energy_source"] = metrics.get("energy_source")
    try:
        report["history_equal"] = history(stopped) == history(reference)
    except (OSError, KeyError) as err:
        report["history_equal"] = None
        report["history_error"] = f"{type(err).__name__}: {err}"
    exact_needed = not args.device.startswith("cuda")
    report["ok"] = bool(
        report["reached_mid_epoch"]
        and report["stopped_exit_code"] == STOPPED_EXIT_CODE
        and report.get("exit_s_after_signal", 99) < 10
        and report["checkpoint_written"]
        and not report["metrics_written_by_stopped_run"]
        and report["resumed_exit_code"] == 0
        and report["pieces"] == 2
        and (report["history_equal"] or not exact_needed)
    )
    print(
        f"resume check ({args.algorithm} on {args.device}): SIGTERM half-way through pass {args.pause_pass} -> exit "
        f"{report['stopped_exit_code']} after {report.get('exit_s_after_signal', '-')} s, checkpoint "
        f"{'written' if report['checkpoint_written'] else 'MISSING'}; the same command -> exit "
        f"{report['resumed_exit_code']}, pieces {report['pieces']}, history "
        f"{'equal to' if report['history_equal'] else 'DIFFERENT from'} the uninterrupted run's: "
        f"{'ok' if report['ok'] else 'FAILED'}"
    )
    if not report["ok"]:
        print(report["stopped_stderr_tail"], report["resumed_stderr_tail"], sep="\n", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
