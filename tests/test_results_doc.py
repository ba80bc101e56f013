"""docs/results.md's tables are what the kept run records give: docs/evidence/ is rebuilt with
no training into a temporary folder (``bpfree rebuild``), and every table block of the document
must equal the table rebuilt (scripts/results_doc.py --check); the claims table covers every
claim of the paper, each with a verdict or "needs a GPU"."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = REPO / "docs" / "evidence"


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("evidence")
    shutil.copytree(EVIDENCE / "runs", folder / "runs")
    proc = subprocess.run(
        [sys.executable, "-m", "bpfree", "rebuild", str(folder)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return folder / "tables"


def test_the_results_docs_tables_are_the_rebuilt_ones(rebuilt):
    spec = importlib.util.spec_from_file_location("results_doc", REPO / "scripts" / "results_doc.py")
    results_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results_doc)
    assert results_doc.main(["--tables", str(rebuilt), "--doc", str(REPO / "docs" / "results.md"), "--check"]) == 0


def test_the_kept_tables_are_the_rebuilt_ones(rebuilt):
    for table in sorted(rebuilt.glob("*.md")):
        assert (EVIDENCE / "tables" / table.name).read_text() == table.read_text(), table.name


def test_every_claim_has_a_verdict(rebuilt):
    from bpfree.report.claims import NOT_IN_GRID, NOT_RUN, VERDICTS, claims

    table = pl.read_csv(rebuilt / "claims.csv", infer_schema_length=None)
    assert set(table["claim"]) >= {c.id for c in claims()}
    assert set(table["verdict"]) <= set(VERDICTS)
    ran = table.filter(~pl.col("verdict").is_in([NOT_RUN, NOT_IN_GRID]))
    assert {"mf-accuracy", "mf-energy", "cafo-accuracy", "ff-accuracy"} <= set(ran["claim"])
