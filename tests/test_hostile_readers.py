"""Issue 35: every file a command reads back goes through one bounded, typed reader, and a
damaged one is reported as damaged in one line, never as pending and never as a traceback.

 3. a journal line that is valid JSON but no operation: set aside like a cut one
 4. status (checkpoints, metrics.json, names from the config), dashboard (journals, ports,
    writes), figures (a damaged table)
 5. ``--config`` overrides coerced to their keys' types
 6. a table set half rewritten (aggregate killed) is refused by figures

and the fuzz harness (slow tier) throws mutated journals, metrics, checkpoints and tables at
status, dashboard, figures and the tuning journal's repair."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile import cli, mutations, refused, write_run
from test_status import CONFIG, make_grid

from bpfree.tuning.journal import WholeLinesJournal

REPO = Path(__file__).resolve().parents[1]
MF_RUN = "results/runs/digits/mlp-8-8/mf/seed1"  # running: a checkpoint (the grid fixture)
BP_RUN = "results/runs/digits/mlp-8-8/bp/seed1"  # done: a metrics.json
MF_JOURNAL = "results/tuning/digits/mlp-8-8/mf/study.journal"


@pytest.fixture
def grid(tmp_path, monkeypatch) -> Path:
    """tests/test_status.py's half-done grid, the current directory."""
    monkeypatch.chdir(tmp_path)
    return make_grid(tmp_path)


def status_of(capsys, *args: str) -> dict:
    code, out, err = cli(capsys, ["status", "--configfile", "config.yaml", "--json", "--no-forecast", *args])
    assert code == 0, err
    return json.loads(out)


def run_of(status: dict, name: str) -> dict:
    return next(r for r in status["runs"] if r["run"] == name)


# -- 3. a journal line that parses but means nothing ------------------------------------------------
BAD_OPERATIONS = {
    "unknown op": {"op_code": 99, "worker_id": "w"},
    "create study without keys": {"op_code": 0, "worker_id": "w"},
    "set param without keys": {"op_code": 5, "worker_id": "w", "trial_id": 0},
    "no worker": {"op_code": 8, "trial_id": 0, "user_attr": {"a": 1}},
    "text for a step": {"op_code": 7, "worker_id": "w", "trial_id": 0, "step": "x", "intermediate_value": 0.5},
    "a list": [1, 2],
}


@pytest.mark.parametrize("line", list(BAD_OPERATIONS.values()), ids=list(BAD_OPERATIONS))
def test_a_journal_line_that_parses_but_is_no_operation_is_set_aside(tmp_path, capsys, line):
    from helpers import tune_argv

    journal = tmp_path / "study.journal"
    args = tune_argv("--device", "cpu", "--max-epochs", "1", arch="mlp:8", n_trials=1, storage=journal)
    args += ["--out", str(tmp_path / "best.yaml")]
    assert cli(capsys, args)[0] == 0
    whole = journal.read_bytes()
    with open(journal, "ab") as fh:
        fh.write(json.dumps(line).encode() + b"\n")
    args[args.index("--n-trials") + 1] = "2"
    code, _, err = cli_lines(capsys, args)
    assert code == 0, err
    line_number = whole.count(b"\n") + 1
    assert f"journal {journal} is damaged at line {line_number}" in err and "set aside as" in err
    assert journal.read_bytes().startswith(whole)  # its entries before the damage kept
    assert len(list(tmp_path.glob("study.journal.corrupt-*"))) == 1
    # and the next start finds nothing to repair: no crash loop
    assert cli_lines(capsys, args)[0] == 0


def cli_lines(capsys, args: list[str]) -> tuple[int, str, str]:
    """``bpfree ARGS`` in this process: any number of lines, never a traceback."""
    from bpfree.cli import main

    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def test_the_journal_reader_replays_what_passes_its_checks_and_says_where_it_stops(tmp_path):
    """A line with the keys and types but that Optuna cannot replay (a distribution that is
    no distribution, for a running trial) is damage too, found by replaying."""
    from bpfree.core.journal import read_journal

    journal = tmp_path / "study.journal"
    study = optuna.create_study(storage=optuna.storages.JournalStorage(WholeLinesJournal(str(journal))))
    study.ask()  # RUNNING, trial_id 0
    good = journal.read_bytes()
    bad = {"op_code": 5, "worker_id": "w", "trial_id": 0, "param_name": "x", "param_value_internal": 1.0}
    with open(journal, "ab") as fh:
        fh.write(json.dumps({**bad, "distribution": '{"name": "NoSuch"}'}).encode() + b"\n")
    read = read_journal(journal)
    assert read.kept == len(good) and read.damage.line == good.count(b"\n") + 1
    assert "Optuna cannot replay it" in read.damage.reason and len(read.trials) == 1


# -- 4. bpfree status -------------------------------------------------------------------------------
def zip_bomb(path: Path, size: int) -> None:
    """A torch-like checkpoint whose data.pkl is a pickle of ``size`` zero bytes: a few KB
    compressed."""
    header = b"\x80\x04\x8e" + size.to_bytes(8, "little")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as fh:
            fh.write(header)
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                fh.write(chunk)
            fh.write(b".")


def test_status_refuses_a_checkpoint_whose_pickle_is_too_large_before_reading_it(grid, capsys):
    checkpoint = grid / MF_RUN / "checkpoint.pt"
    zip_bomb(checkpoint, 16 << 20)
    assert checkpoint.stat().st_size < 200_000
    run = run_of(status_of(capsys), "digits mlp:8,8 mf seed1")
    assert run["state"] == "damaged" and "its data.pkl is 16777228 bytes, more than the 8388608" in run["problem"]


@pytest.mark.slow
def test_status_reads_a_1mb_zip_holding_a_1gib_pickle_within_a_memory_limit(grid):
    """The issue's case as written: under a 1.5 GB address-space limit, one line, no MemoryError."""
    zip_bomb(grid / MF_RUN / "checkpoint.pt", 1 << 30)
    probe = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000)); "
        "from bpfree.cli import main; sys.exit(main(['status', '--configfile', 'config.yaml', '--no-forecast']))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=grid, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "digits mlp:8,8 mf seed1: checkpoint " in out.stdout and "is 1073741836 bytes" in out.stdout


def with_field(key: str, value) -> callable:
    def change(record: dict) -> bytes:
        return json.dumps({**record, key: value}).encode()  # 1e400 is written as Infinity

    return change


@pytest.mark.parametrize(
    "change, expected",
    [
        (with_field("epochs", "abc"), "field 'epochs': Input should be a valid integer"),
        (with_field("epochs", 1e400), "field 'epochs'"),
        (with_field("train_time_s", 1e400), "field 'train_time_s' is inf, not a finite number"),
        (with_field("energy_j", -1e400), "field 'energy_j' is -inf, not a finite number"),
        (lambda record: b'{"status": "ok", "epo', "is not valid JSON"),
        (lambda record: b'{"status": "\xff"}', "is not UTF-8 text"),
    ],
    ids=["text epochs", "infinite epochs", "infinite time", "infinite energy", "cut", "latin-1"],
)
def test_status_reports_a_damaged_metrics_json_as_damaged_not_pending(grid, capsys, change, expected):
    metrics = grid / BP_RUN / "metrics.json"
    metrics.write_bytes(change(json.loads(metrics.read_text())))
    status = status_of(capsys)
    run = run_of(status, "digits mlp:8,8 bp seed1")
    shown = f"{BP_RUN}/metrics.json"  # as status found it, under --results
    assert run["state"] == "damaged" and expected in run["problem"] and shown in run["problem"]
    assert status["state"] != "done"
    code, text, _ = cli(capsys, ["status", "--configfile", "config.yaml", "--no-forecast"])
    assert code == 0 and "damaged: 1" in text and "digits mlp:8,8 bp seed1: " in text and shown in text


def test_status_reports_a_damaged_journal_as_damaged(grid, capsys):
    journal = grid / MF_JOURNAL
    with open(journal, "ab") as fh:
        fh.write(b'{"op_code": 99, "worker_id": "w"}\n')
    study = next(s for s in status_of(capsys)["studies"] if s["algorithm"] == "mf")
    assert study["state"] == "damaged" and "op_code 99 is no journal operation" in study["problem"]
    assert study["complete"] == 1  # what is before the damage is shown
    journal.write_bytes(os.urandom(4096))
    study = next(s for s in status_of(capsys)["studies"] if s["algorithm"] == "mf")
    assert study["state"] == "damaged" and "line 1 (byte 0)" in study["problem"]


def test_status_does_not_follow_a_config_name_out_of_the_results_folder(grid, capsys):
    config = yaml.safe_load((grid / "config.yaml").read_text())
    config["experiments"][0]["datasets"] = ["../../../outside"]
    (grid / "outside.yaml").write_text(yaml.safe_dump(config))
    refused(capsys, ["status", "--configfile", "outside.yaml"], "'../../../outside' cannot be a folder name")


# -- 4. bpfree dashboard ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--port", "70000"], "argument --port: 70000 is out of range: from 0 to 65535"),
        (["--port", "-1"], "argument --port: -1 is out of range"),
        (["--refresh", "0"], "argument --refresh: 0 is out of range"),
        (["--refresh", "nan"], "argument --refresh: nan is out of range"),
        (["--stop-after", "-5"], "argument --stop-after: -5 is out of range"),
    ],
)
def test_dashboard_numbers_are_range_checked_where_they_are_parsed(tmp_path, capsys, args, expected):
    from bpfree.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", "--results", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and expected in err


def dashboard(results: Path, seconds: float = 60) -> tuple[subprocess.Popen, int]:
    pytest.importorskip("optuna_dashboard")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bpfree", "dashboard", "--results", str(results), "--port", "0"]
        + ["--stop-after", str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = proc.stdout.readline()
    assert "studies from" in line, line + proc.stderr.read()
    return proc, int(re.search(r"http://[^:]+:(\d+)/", line)[1])


def test_dashboard_shows_what_it_can_of_damaged_journals_in_one_line_each(grid):
    (grid / MF_JOURNAL).write_bytes(os.urandom(3000))  # random bytes
    bp = grid / "results/tuning/digits/mlp-8-8/bp/study.journal"
    with open(bp, "ab") as fh:
        fh.write(b'{"op_code": 0, "worker_id": "w"}\n')
    proc, port = dashboard(grid / "results", seconds=3)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert any(f"journal {grid / MF_JOURNAL}: damaged at line 1 (byte 0)" in line for line in lines), err
    assert any(f"journal {bp}: damaged at line" in line and "without 'study_name'" in line for line in lines), err


def test_dashboard_answers_a_write_with_403_and_no_stack(grid):
    proc, port = dashboard(grid / "results", seconds=90)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/studies/0/note", data=b'{"version": 1, "body": "x"}', method="PUT"
        )
        with pytest.raises(urllib.error.HTTPError) as refused_:
            urllib.request.urlopen(request, timeout=30)
        assert refused_.value.code == 403 and b"read-only" in refused_.value.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as ok:
            assert ok.status == 200 and len(json.loads(ok.read())["study_summaries"]) == 2
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"the dashboard did not stop on SIGTERM: {err}")
    assert "Traceback" not in err, err


# -- 4 and 6. bpfree figures: a damaged table, a half-written set ---------------------------------------
@pytest.fixture
def tables(tmp_path, capsys) -> tuple[Path, list[Path]]:
    metrics = [write_run(tmp_path / f"runs/{a}{s}", s, 0.5, algorithm=a) for a in ("bp", "mf") for s in (1, 2)]
    out = tmp_path / "tables"
    code, _, err = cli(capsys, ["aggregate", *map(str, metrics), "--out-dir", str(out)])
    assert code == 0, err
    return out, metrics


def test_figures_refuse_a_damaged_table_in_one_line(tables, capsys, tmp_path):
    out, _ = tables
    (out / "methods.csv").write_bytes(b"algorithm,arch\n\xff\xfe,\x00\n" + os.urandom(64))
    refused(capsys, ["figures", "accuracy", "--tables", str(out), "--out", str(tmp_path / "f")], "methods.csv is not")
    assert not (tmp_path / "f" / "accuracy.svg").exists()


def test_figures_refuse_a_table_set_that_aggregate_left_half_written(tables, capsys, tmp_path, monkeypatch):
    """Issue 35, item 6: aggregate killed after writing some tables of a new set; before, figures
    drew the mix (a summary of two runs beside methods of four) without a word."""
    import bpfree.report.tables

    out, metrics = tables
    written, original = [], bpfree.report.tables.write_text_atomic

    def killed_after_two(path, text, *args):
        if len(written) == 2:
            raise KeyboardInterrupt  # as a SIGKILL would stop it: mid-set
        written.append(path)
        original(path, text, *args)

    monkeypatch.setattr(bpfree.report.tables, "write_text_atomic", killed_after_two)
    assert cli(capsys, ["aggregate", *map(str, metrics[:2]), "--out-dir", str(out)])[0] == 130
    monkeypatch.undo()
    err = refused(capsys, ["figures", "accuracy", "--tables", str(out), "--out", str(tmp_path / "f")])
    assert "holds no complete set of tables (no tables.set.json" in err and "run bpfree aggregate" in err
    # aggregate again: a whole set, which figures draw
    assert cli(capsys, ["aggregate", *map(str, metrics[:2]), "--out-dir", str(out)])[0] == 0
    assert cli(capsys, ["figures", "accuracy", "--tables", str(out), "--out", str(tmp_path / "f")])[0] == 0


def test_aggregate_and_figures_remove_the_temporaries_of_their_interrupted_writes(tables, capsys, tmp_path):
    out, metrics = tables
    (out / ".summary.csv.k3j_x9q2.tmp").write_text("half")
    figures = tmp_path / "f"
    figures.mkdir()
    (figures / ".accuracy.svg.abcdefgh.tmp").write_text("half")
    (figures / ".energy.svg.abcdefgh.tmp").write_text("another job's")
    assert cli(capsys, ["aggregate", *map(str, metrics), "--out-dir", str(out)])[0] == 0
    assert cli(capsys, ["figures", "accuracy", "--tables", str(out), "--out", str(figures)])[0] == 0
    assert not (out / ".summary.csv.k3j_x9q2.tmp").exists() and not (figures / ".accuracy.svg.abcdefgh.tmp").exists()
    assert (figures / ".energy.svg.abcdefgh.tmp").exists()  # not this job's figure


def test_figures_check_their_output_folder_and_names_before_any_work(tables, capsys, tmp_path):
    out, _ = tables
    (tmp_path / "afile").write_text("x")
    refused(capsys, ["figures", "--tables", str(out), "--out", str(tmp_path / "afile")], "is a file, not a directory")
    refused(capsys, ["figures", "acuracy", "--tables", str(out), "--out", str(tmp_path)], "unknown figure(s) 'acuracy'")


# -- 5. --config overrides through Snakemake ---------------------------------------------------------
def test_config_overrides_are_coerced_to_their_keys_types():
    from snakemake.cli import parse_config

    from bpfree.workflow.grid import check_config, coerce_overrides

    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    overrides = parse_config(["seeds=[1,2]", "tune_workers=2", "data_root=2024"])
    assert overrides["seeds"] == ["1", "2"]  # as Snakemake hands them over
    config = coerce_overrides({**default, **overrides}, overrides)
    checked = check_config(config)
    assert checked.seeds == [1, 2] and checked.tune_workers == 2 and checked.data_root == "2024"
    bad = parse_config(["seeds=[a]"])  # left as given: refused in one line by the strict config
    with pytest.raises(Exception, match=r"seeds\[0\]: Input should be a valid integer, got 'a'"):
        check_config(coerce_overrides({**default, **bad}, bad))


@pytest.mark.slow
def test_snakemake_config_seeds_override_is_accepted(tmp_path):
    """config/README.md: --config may override seeds; it was refused ("got '1'")."""
    from test_workflow import job_counts, snakemake

    shutil.copy(REPO / "config/config.yaml", tmp_path / "config.yaml")
    one = snakemake("-n", "--cores", "1", "--configfile", "config.yaml", "--config", "seeds=[1]", cwd=tmp_path)
    two = snakemake("-n", "--cores", "1", "--configfile", "config.yaml", "--config", "seeds=[1,2]", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert job_counts(two.stdout)["train"] == 2 * job_counts(one.stdout)["train"]


# -- the fuzz harness: status, dashboard, figures and the tuning journal --------------------------------
@functools.cache
def journal_bytes() -> bytes:
    """A study's journal, made once (hypothesis draws from the same bytes in every example)."""
    import tempfile

    from test_status import journal_study

    path = Path(tempfile.mkdtemp()) / "study" / "study.journal"
    journal_study(path, [{"state": "complete", "value": 0.8, "epochs": 2}, {"state": "running", "reported": 1}])
    data = path.read_bytes()
    shutil.rmtree(path.parent.parent)
    return data


@functools.cache
def template_grid() -> Path:
    """A results folder made once: a study's journal, a done run, a running one."""
    import tempfile

    from test_status import done_run, journal_study, running_run

    where = Path(tempfile.mkdtemp()) / "grid"
    (where / "results").mkdir(parents=True)
    (where / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    journal_study(where / MF_JOURNAL, [{"state": "complete", "value": 0.7}])
    done_run(where / BP_RUN, epochs=3, time_s=1.0)
    running_run(where / MF_RUN, epochs=4, time_s=2.0)
    return where


@pytest.mark.slow
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_damaged_files_at_status_and_dashboard_never_a_traceback(tmp_path_factory, capsys, data):
    """A results folder whose journal, metrics.json or checkpoint is mutated: status answers
    (exit 0, each damaged file named), the dashboard's snapshot is built."""
    from bpfree.commands.dashboard import snapshot

    where = tmp_path_factory.mktemp("fuzz") / "grid"
    shutil.copytree(template_grid(), where)  # the same bytes in every example: hypothesis draws from them
    results = where / "results"
    kind = data.draw(st.sampled_from(["journal", "metrics", "checkpoint"]))
    path = {"journal": where / MF_JOURNAL, "metrics": where / BP_RUN / "metrics.json"}.get(
        kind, where / MF_RUN / "checkpoint.pt"
    )
    path.write_bytes(data.draw(mutations(path.read_bytes())))
    cwd = os.getcwd()
    os.chdir(where)
    try:
        code, out, err = cli(capsys, ["status", "--configfile", "config.yaml", "--no-forecast"])
    finally:
        os.chdir(cwd)
    assert code == 0, err
    problems = {}
    snapshot(results, problems)
    assert all("\n" not in p for p in problems.values())


@pytest.mark.slow
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_damaged_journals_are_repaired_and_open(tmp_path_factory, data):
    """A journal mutated (cut, bytes flipped, lines of JSON that mean nothing, random bytes):
    the repair keeps a prefix that Optuna opens, or refuses a file that is no journal at all,
    in one line; the study opens after it."""
    from bpfree.core.errors import BpfreeError
    from bpfree.core.journal import read_journal
    from bpfree.tuning.journal import repair_journal

    good = journal_bytes()
    lines = good.splitlines(keepends=True)
    extra = st.sampled_from(
        [json.dumps(v).encode() + b"\n" for v in BAD_OPERATIONS.values()] + [b'{"op_code": 6, "worker_id": "w"}\n']
    )
    bad = data.draw(
        st.one_of(
            mutations(good),
            st.tuples(st.integers(0, len(lines)), extra).map(
                lambda t: b"".join(lines[: t[0]]) + t[1] + b"".join(lines[t[0] :])
            ),
        )
    )
    path = tmp_path_factory.mktemp("repair") / "study.journal"
    path.write_bytes(bad)
    try:
        repair_journal(path)
    except BpfreeError as err:
        assert "is not an Optuna journal" in str(err) and "\n" not in str(err)
        return
    assert read_journal(path, in_progress=False).damage is None
    storage = optuna.storages.JournalStorage(WholeLinesJournal(str(path)))
    for summary in optuna.get_all_study_summaries(storage):
        optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()


@pytest.mark.slow
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_damaged_tables_at_figures_never_a_traceback(tmp_path_factory, capsys, data):
    """A table of a set (or the set's record) mutated: figures draw (the file still matches,
    e.g. cut at its end) or refuse in one line; never a traceback."""
    where = tmp_path_factory.mktemp("tables")
    out = where / "tables"
    shutil.copytree(template_tables(), out)  # the same bytes in every example: hypothesis draws from them
    name = data.draw(st.sampled_from(["summary.csv", "methods.csv", "deltas.csv", "histories.csv", "tables.set.json"]))
    (out / name).write_bytes(data.draw(mutations((out / name).read_bytes())))
    code, _, err = cli(capsys, ["figures", "accuracy", "--tables", str(out), "--out", str(where / "f")])
    assert code in (0, 2), err


@functools.cache
def template_tables() -> Path:
    """A set of tables bpfree aggregate wrote, made once."""
    import tempfile

    from bpfree.cli import main

    where = Path(tempfile.mkdtemp())
    metrics = [write_run(where / f"runs/{a}{s}", s, 0.5, algorithm=a) for a in ("bp", "mf") for s in (1, 2)]
    assert main(["aggregate", *map(str, metrics), "--out-dir", str(where / "tables")]) == 0
    return where / "tables"
