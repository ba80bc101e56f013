"""Keep what a run stopped part-way has measured, for docs/evidence/unfinished/:

    python scripts/keep_unfinished.py RUN_DIR [--evidence docs/evidence]

RUN_DIR is a run folder of the results layout (RESULTS/runs/DATASET/ARCH/ALGORITHM/seedN) that
holds a checkpoint and no metrics.json: a run that the machine's time did not allow to finish.
Its spec.yaml and the epochs its checkpoint holds (as history.csv, the columns a finished run's
history has) are written to EVIDENCE/unfinished/DATASET/ARCH/ALGORITHM/seedN/, read without
unpickling a tensor (bpfree.core.readback). scripts/results_doc.py builds the ``unfinished``
table of docs/results.md from them: how far the run got, at what cost per epoch, and what its
remaining epoch budget would cost. The run itself goes on from its checkpoint when its command
runs again; this keeps no weights."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from bpfree.core.io import write_history_atomic
from bpfree.core.outputs import RUN_CHECKPOINT, RUN_HISTORY, RUN_METRICS, RUN_SPEC
from bpfree.core.readback import read_checkpoint_data


def epoch_rows(checkpoint: Path) -> list[dict]:
    """The checkpoint's epochs as history.csv rows (``extra`` spread into columns)."""
    rows = []
    for epoch in read_checkpoint_data(checkpoint).get("history") or []:
        row = {k: v for k, v in epoch.items() if k != "extra"}
        row.update(epoch.get("extra") or {})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="RESULTS/runs/DATASET/ARCH/ALGORITHM/seedN (with a checkpoint)")
    parser.add_argument("--evidence", type=Path, default=Path("docs/evidence"))
    args = parser.parse_args(argv)
    run = args.run
    if (run / RUN_METRICS).exists():
        print(f"{run} has finished ({RUN_METRICS}): keep its record under runs/, not unfinished/", file=sys.stderr)
        return 1
    if not (run / RUN_CHECKPOINT).is_file() or not (run / RUN_SPEC).is_file():
        print(f"{run} holds no {RUN_CHECKPOINT} and {RUN_SPEC}: nothing measured to keep", file=sys.stderr)
        return 1
    rows = epoch_rows(run / RUN_CHECKPOINT)
    dest = args.evidence / "unfinished" / Path(*run.resolve().parts[-4:])
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / RUN_SPEC, dest / RUN_SPEC)
    write_history_atomic(dest / RUN_HISTORY, rows)
    print(f"{dest}: {len(rows)} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
