"""docs/results.md's tables, filled from the tables ``bpfree rebuild docs/evidence`` writes:

    python scripts/results_doc.py [--tables docs/evidence/tables] [--doc docs/results.md] [--check]

Each block of the document between ``<!-- table: NAME -->`` and ``<!-- /table -->`` is replaced
by TABLES/NAME.md (the readable table ``bpfree aggregate`` writes, with its notes), so that no
number in those tables is written by hand. One block is built here rather than by ``bpfree
rebuild``: ``<!-- table: unfinished -->``, from the runs under EVIDENCE/unfinished/ that the
machine's time did not let finish (scripts/keep_unfinished.py keeps their spec.yaml and the
epochs their checkpoint holds): how far each got, its cost per epoch, and the worst case of its
remaining epoch budget. ``--check`` changes nothing and exits 1 when a block differs from its
table (tests/test_results_doc.py runs it against freshly rebuilt tables)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import polars as pl

from bpfree.core.io import loads_yaml

BLOCK = re.compile(r"(<!-- table: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


UNFINISHED, VERDICTS = "unfinished", "verdicts"


def verdicts_table(tables: Path) -> str:
    """The claims table's rows that hold runs (at least one pair), in fewer columns: what the
    page's discussion goes through, claim by claim."""
    from bpfree.report.claims import claims_display
    from bpfree.report.formats import to_markdown

    claims = pl.read_csv(tables / "claims.csv", infer_schema_length=None)
    ran = claims.filter(pl.col("pairs").fill_null(0) > 0)
    if ran.is_empty():
        return "No claim has a run behind it yet.\n"
    shown = claims_display(ran).drop("the paper says", "ours, twin tested at last / min val. loss / max val. acc.")
    return to_markdown(
        shown,
        "only the rows of the claims table that hold runs; that whole table, with the verdict rule under it, ends this page",
    )


def unfinished_table(evidence: Path) -> str:
    """The runs under EVIDENCE/unfinished/: one row each, from their spec.yaml and history.csv."""
    rows = []
    for history in sorted((evidence / UNFINISHED).glob("*/*/*/seed*/history.csv")):
        spec = loads_yaml(history.with_name("spec.yaml").read_text(encoding="utf-8"), str(history))
        epochs = pl.read_csv(history)
        done, budget = epochs.height, int(spec["early_stopping"]["max_epochs"])
        per_epoch = float(epochs["epoch_time_s"].mean())
        best = epochs.sort("val_accuracy", descending=True, maintain_order=True).row(0, named=True)
        source = (
            ", ".join(sorted(set(epochs["energy_source"].drop_nulls()))) if "energy_source" in epochs.columns else "-"
        )
        energy = f"{epochs['energy_j'].sum() / 1000:.1f} kJ ({source})" if "energy_j" in epochs.columns else "-"
        rows.append(
            f"| {spec['dataset']} | {spec['arch']} | {spec['algorithm']} | {spec['seed']} | {done} of {budget} "
            f"| {epochs['epoch_time_s'].sum() / 3600:.2f} h | {per_epoch:.0f} s | {best['val_accuracy'] * 100:.2f}% "
            f"(epoch {best['epoch']}) | {done - best['epoch']} of {spec['early_stopping']['patience']} "
            f"| {energy} | {(budget - done) * per_epoch / 3600:.2f} h |"
        )
    if not rows:
        return "No run was left unfinished.\n"
    head = (
        "| dataset | arch | algorithm | seed | epochs run | training time | per epoch (mean) "
        "| best val accuracy | epochs since best (patience) | energy so far | the remaining budget, worst case |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    note = (
        "\nRead from docs/evidence/unfinished/ (scripts/keep_unfinished.py: the epochs each run's "
        "checkpoint holds). The worst case is the epochs left to `max_epochs` at the mean time per "
        "epoch measured so far; early stopping (patience on validation accuracy) may end the run "
        "sooner. No test accuracy: the run has not finished.\n"
    )
    return head + "\n".join(rows) + "\n" + note


def filled(doc: str, tables: Path, evidence: Path | None = None) -> str:
    """``doc`` with every table block holding its table."""

    def body(name: str) -> str:
        if name == VERDICTS:
            return verdicts_table(tables)
        if name == UNFINISHED:
            return unfinished_table(evidence or tables.parent)
        path = tables / f"{name}.md"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run bpfree rebuild on the evidence folder first")
        return path.read_text(encoding="utf-8")

    def table(match: re.Match) -> str:
        return match[1] + body(match["name"]).rstrip("\n") + "\n" + match[4]

    return BLOCK.sub(table, doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="docs/evidence/tables", help="bpfree rebuild's tables")
    parser.add_argument("--doc", default="docs/results.md")
    parser.add_argument("--evidence", default="docs/evidence", help="the evidence folder (its unfinished/ runs)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 where a block differs")
    args = parser.parse_args(argv)
    doc = Path(args.doc).read_text(encoding="utf-8")
    blocks = [m["name"] for m in BLOCK.finditer(doc)]
    if not blocks:
        print(f"{args.doc} has no table block", file=sys.stderr)
        return 1
    new = filled(doc, Path(args.tables), Path(args.evidence))
    if args.check:
        if new != doc:
            print(f"{args.doc}: its tables differ from {args.tables} (python scripts/results_doc.py)", file=sys.stderr)
            return 1
        print(f"{args.doc}: {len(blocks)} tables as {args.tables} holds them ({', '.join(blocks)})")
        return 0
    Path(args.doc).write_text(new, encoding="utf-8")
    print(f"{args.doc}: {len(blocks)} tables filled from {args.tables}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
