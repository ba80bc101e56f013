"""Running README's own examples in the checkout leaves it clean: every file or folder they
write (``--out``, ``--report``, ``--storage``, ``--root``) is ignored by .gitignore."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WRITES = re.compile(r"--(?:out|report|storage|root)\s+(\S+)")


def readme_outputs() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return sorted({path for block in blocks for path in WRITES.findall(block) if not path.startswith("/")})


def test_readme_examples_write_only_ignored_paths():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    outputs = readme_outputs()
    assert {"report.html", "runs/bp", "bench.json"} <= set(outputs)  # what the examples write, found
    # a path inside each (a run folder's files; a folder pattern such as /data/ needs one)
    inside = [f"{path}/written" for path in outputs]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *inside], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    left = [path for path, probe in zip(outputs, inside, strict=True) if probe not in ignored]
    assert left == [], "README's examples leave these untracked in the checkout"


def test_the_docs_list_every_dataset():
    """README's and docs/usage.md's ``bpfree datasets`` line names every registered dataset
    (usage.md's lacked mnist-5k)."""
    import bpfree.data  # noqa: F401  (registers the datasets)
    from bpfree.core.registry import DATASETS

    for doc in ("README.md", "docs/usage.md"):
        (line,) = [x for x in (ROOT / doc).read_text().splitlines() if x.startswith("bpfree datasets ")]
        named = set(re.findall(r"[a-z][\w-]*", line.split("#", 1)[1])) - {"offline"}
        assert named == set(DATASETS.names()), f"{doc}: {line!r}"
