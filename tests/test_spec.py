"""The run specification: every setting defined once (bpfree/core/spec.py), the documents derived
from it kept up to date, each run re-runnable exactly from its own spec.yaml, a run's identity
a hash of its spec, and the layering that keeps reading a spec free of torch."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import train_argv

from bpfree.cli import main
from bpfree.core.errors import BpfreeError
from bpfree.core.spec import EarlyStopping, Machine, Measurement, RunSpec, dump_yaml, load_spec, parse
from bpfree.engine.checkpoint import Checkpoint
from bpfree.engine.resolve import resolve

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--measure-idle-s", "0", "--measure-codecarbon", "off", "--threads", "1", "--device", "cpu"]


def history(path: Path) -> list[tuple]:
    with open(path, newline="") as fh:
        return [(r["epoch"], r["stage"], r["train_loss"], r["val_loss"], r["val_accuracy"]) for r in csv.DictReader(fh)]


def test_the_schema_and_the_key_table_are_generated_from_the_spec():
    proc = subprocess.run(
        [sys.executable, "-m", "bpfree", "schema", "--check", str(REPO)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_run_is_re_run_exactly_from_its_spec_yaml(tmp_path):
    first = tmp_path / "first"
    args = train_argv(algorithm="mf", seed=4, arch="mlp:16,16")
    assert main([*args, "--max-epochs", "3", *QUIET, "--out", str(first)]) == 0
    spec = load_spec(first / "spec.yaml")
    assert spec.arch == "mlp:16,16" and spec.early_stopping.max_epochs == 3
    assert {"lr", "batch_size", "epochs_per_layer"} <= set(spec.params)  # every default filled in
    again = tmp_path / "again"
    assert main(["train", "--spec", str(first / "spec.yaml"), "--out", str(again)]) == 0
    assert history(again / "history.csv") == history(first / "history.csv")
    one, two = (json.loads((d / "metrics.json").read_text()) for d in (first, again))
    assert one["test_accuracy"] == two["test_accuracy"] and one["spec_digest"] == two["spec_digest"]
    assert one["schema_version"] == 1
    assert (again / "spec.yaml").read_text() == (first / "spec.yaml").read_text()


def test_spec_flags_cannot_silently_differ_from_the_file(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(dump_yaml(RunSpec(algorithm="bp", dataset="digits", seed=1)))
    assert main(["train", "--spec", str(path), "--seed", "2", "--out", str(tmp_path / "o")]) == 2
    assert "drop --seed" in capsys.readouterr().err


def test_bpfree_spec_writes_what_the_flags_describe(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("early_stopping: {patience: 3}\nprecision: bf16\n")
    out = tmp_path / "spec.yaml"
    assert main(train_argv(command="spec", seed=2, config=config, out=out)) == 0
    spec = load_spec(out)
    assert spec.early_stopping.patience == 3 and spec.precision == "bf16" and spec.arch == "mlp:1000,1000"


def test_the_identity_is_what_the_model_depends_on():
    base = resolve(RunSpec(algorithm="bp", dataset="digits", seed=1, arch="mlp:8"))
    same = [
        base.replace(machine=Machine(threads=3, data_root="elsewhere")),
        base.replace(measurement=Measurement(idle_seconds=0)),
        base.replace(checkpoint_every_s=0.0),
    ]
    assert all(s.digest("cpu") == base.digest("cpu") for s in same)
    other = [
        base.replace(params={**base.params, "lr": 0.5}),
        base.replace(seed=2),
        base.replace(early_stopping=EarlyStopping(patience=3)),
        base.replace(precision="bf16"),
    ]
    assert len({s.digest("cpu") for s in other} | {base.digest("cpu")}) == 5
    assert base.digest("cuda") != base.digest("cpu")  # RNG states differ between device types


def test_resolving_fills_every_default_and_checks_the_params():
    spec = resolve(RunSpec(algorithm="ff", dataset="digits", seed=0))
    assert spec.arch is not None and "lr" in spec.params
    with pytest.raises(BpfreeError, match="unknown parameter 'lrr'"):
        resolve(RunSpec(algorithm="bp", dataset="digits", seed=0, params={"lrr": 1}))
    with pytest.raises(BpfreeError, match="cannot train cnn:4"):
        resolve(RunSpec(algorithm="mf", dataset="digits", seed=0, arch="cnn:4"))


def test_every_check_is_one_line_naming_the_key():
    for data, expected in [
        ({"algorithm": "bp", "dataset": "d", "seed": 0, "early_stopping": {"patience": 0}}, "early_stopping.patience"),
        ({"algorithm": "bp", "dataset": "d", "seed": 0, "machine": {"data_root": "a\tb"}}, "control characters"),
        ({"algorithm": "bp", "dataset": "d", "seed": 0, "precision": "fp16"}, "precision: Input should be"),
        ({"algorithm": "bp", "dataset": "d", "seed": 0, "zzz": 1}, "unknown key 'zzz' at top level; valid keys"),
    ]:
        with pytest.raises(BpfreeError, match=expected) as err:
            parse(RunSpec, data)
        assert "\n" not in str(err.value)


def test_reading_a_spec_imports_no_torch_and_the_registry_imports_no_algorithm(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(dump_yaml(RunSpec(algorithm="bp", dataset="digits", seed=1)))
    code = (
        "import sys; import bpfree.core.spec, bpfree.engine.resolve, bpfree.core.registry, bpfree.core.record, bpfree.core.outputs; "
        f"bpfree.engine.resolve.load_settings({str(REPO / 'config' / 'config.yaml')!r}); "
        f"bpfree.core.spec.load_spec({str(path)!r}); "
        "bad = [m for m in ('torch', 'bpfree.algorithms', 'bpfree.data', 'bpfree.workflow.grid') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_aggregate_and_figures_do_not_import_the_workflow_planner():
    code = "import sys, bpfree.report.tables, bpfree.report.figures; assert 'bpfree.workflow.grid' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_checkpoint_runs_no_code_and_is_set_aside(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 2, "identity": None, "stage_index": _Payload(marker)}, path)
    with open(tmp_path / "plain.pkl", "wb") as fh:  # the same payload does run when unpickled plainly
        pickle.dump(_Payload(tmp_path / "CONTROL"), fh)
    with open(tmp_path / "plain.pkl", "rb") as fh:
        pickle.load(fh)  # noqa: S301  (the control: proves the payload works)
    assert (tmp_path / "CONTROL").exists()

    assert Checkpoint(path).load() is None
    assert not marker.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is unreadable as plain data" in err[0] and "set aside as checkpoint.pt.corrupt-" in err[0]
    assert not path.exists() and any(p.name.startswith("checkpoint.pt.corrupt-") for p in tmp_path.iterdir())


def test_precision_choices_defined_once():
    """The precision choices are written once (bpfree.core.spec.PRECISIONS): the model's check,
    the generated schema's enum, the CLI's choices and the engine all read them."""
    import argparse

    import yaml

    from bpfree.cli import build_parser
    from bpfree.core.spec import PRECISIONS
    from bpfree.engine import precision

    assert precision.PRECISIONS is PRECISIONS
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert tuple(schema["properties"]["precision"]["enum"]) == PRECISIONS
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "spec", "bench"):
        (flag,) = [a for a in sub.choices[command]._actions if "--precision" in a.option_strings]
        assert tuple(flag.choices) == PRECISIONS, command


def test_pruner_choices_defined_once():
    """The pruners are written once (bpfree.core.spec.PRUNERS): the model's check, the
    generated schema's enum and ``bpfree tune --pruner``'s choices all read them."""
    import argparse

    import yaml

    from bpfree.cli import build_parser
    from bpfree.core.spec import PRUNERS, Tuning, parse

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    tuning = schema["properties"]["tuning"]
    tuning = schema["$defs"][tuning["$ref"].rsplit("/", 1)[1]] if "$ref" in tuning else tuning
    assert tuple(tuning["properties"]["pruner"]["enum"]) == PRUNERS
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    (flag,) = [a for a in sub.choices["tune"]._actions if "--pruner" in a.option_strings]
    assert tuple(flag.choices) == PRUNERS
    assert {parse(Tuning, {"pruner": p}).pruner for p in PRUNERS} == set(PRUNERS)
    with pytest.raises(BpfreeError, match="pruner"):
        parse(Tuning, {"pruner": "asha"})
