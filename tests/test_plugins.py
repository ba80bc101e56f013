"""A new algorithm or dataset from another package, through the ``bpfree.plugins`` entry
points, without an edit to bpfree: listed, trained, tuned; a broken plugin is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
"""A toy plugin: BP under another name with its own search space, and digits again."""
from bpfree.algorithms.bp import Backprop
from bpfree.core.registry import ALGORITHMS, DATASETS


@ALGORITHMS.register("toy-bp")
class ToyBackprop(Backprop):
    name = "toy-bp"
    search_space = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}


DATASETS.register("toy-digits")(DATASETS.get("digits"))
'''


def install_fake_plugin(site: Path, module: str, body: str) -> None:
    """What ``pip install`` of a package declaring the entry point leaves on sys.path."""
    (site / f"{module}.py").write_text(body)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[bpfree.plugins]\n{module} = {module}\n")


def bpfree(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bpfree", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_plugin_algorithm_and_dataset_are_listed_trained_and_tuned(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_plugin(site, "toy_plugin", textwrap.dedent(PLUGIN))
    listed = bpfree(site, "algorithms")
    assert listed.returncode == 0 and "toy-bp" in listed.stdout, listed.stderr
    assert "toy-digits" in bpfree(site, "datasets").stdout

    common = [
        "--algorithm",
        "toy-bp",
        "--dataset",
        "toy-digits",
        "--arch",
        "mlp:16",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    tuned = bpfree(
        site,
        "tune",
        *common,
        "--n-trials",
        "2",
        "--max-epochs",
        "2",
        "--storage",
        str(tmp_path / "s.journal"),
        "--out",
        str(tmp_path / "best.yaml"),
    )
    assert tuned.returncode == 0, tuned.stderr
    assert "lr" in (tmp_path / "best.yaml").read_text()  # from the plugin's own search space
    trained = bpfree(
        site,
        "train",
        *common,
        "--seed",
        "1",
        "--max-epochs",
        "3",
        "--params",
        str(tmp_path / "best.yaml"),
        "--measure-idle-s",
        "0",
        "--measure-codecarbon",
        "off",
        "--out",
        str(tmp_path / "run"),
    )
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["algorithm"] == "toy-bp" and metrics["test_accuracy"] > 0.5


def test_a_broken_plugin_is_one_line_naming_it(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_plugin(site, "broken_plugin", "import a_module_that_is_not_there\n")
    done = bpfree(site, "algorithms")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "bpfree plugin 'broken_plugin'" in lines[0] and "ModuleNotFoundError" in lines[0]


def test_a_one_off_plugin_module_by_flag_or_environment(tmp_path):
    """No packaging needed: ``bpfree --plugin MODULE`` or ``BPFREE_PLUGINS=MODULE``."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_methods.py").write_text(textwrap.dedent(PLUGIN))
    by_flag = bpfree(site, "--plugin", "my_methods", "algorithms")
    assert by_flag.returncode == 0 and "toy-bp" in by_flag.stdout, by_flag.stderr
    assert "toy-bp" not in bpfree(site, "algorithms").stdout  # nothing imported it this time
    env = {**os.environ, "PYTHONPATH": str(site), "BPFREE_PLUGINS": "my_methods"}
    by_env = subprocess.run([sys.executable, "-m", "bpfree", "datasets"], env=env, capture_output=True, text=True)
    assert by_env.returncode == 0 and "toy-digits" in by_env.stdout, by_env.stderr
    missing = bpfree(site, "--plugin", "no_such_module", "algorithms")
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith(
        "bpfree: error: bpfree plugin 'no_such_module' (--plugin) failed to import"
    )


def test_a_plugin_architecture_matches_the_workflows_arch_wildcard(monkeypatch):
    """The workflow's arch wildcard is derived from the spec's ARCH_PATTERN (bpfree.workflow.grid.
    ARCH_SLUG_PATTERN, used by workflow/rules/common.smk), not a list of kinds: a kind a plugin
    registers names its runs' folders and plans like mlp and cnn."""
    import re

    from bpfree.core.registry import ARCHITECTURES
    from bpfree.core.spec import ARCH_PATTERN
    from bpfree.models import parse_arch
    from bpfree.workflow.grid import ARCH_SLUG_PATTERN, arch_to_slug, slug_to_arch

    monkeypatch.setitem(ARCHITECTURES._entries, "toy-net_2", ARCHITECTURES.get("mlp"))
    assert "arch=ARCH_SLUG_PATTERN" in (Path(__file__).parents[1] / "workflow/rules/common.smk").read_text()
    for kind in ARCHITECTURES.names():
        arch = f"{kind}:16,8"
        assert re.fullmatch(ARCH_PATTERN, arch) and str(parse_arch(arch)) == arch
        slug = arch_to_slug(arch)
        assert re.fullmatch(ARCH_SLUG_PATTERN, slug), slug
        assert slug_to_arch(slug) == arch
    assert not re.fullmatch(ARCH_SLUG_PATTERN, "mlp:16") and not re.fullmatch(ARCH_SLUG_PATTERN, "mlp")
