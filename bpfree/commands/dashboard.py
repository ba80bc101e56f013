"""``bpfree dashboard``: every study of the grid in one optuna-dashboard page, read-only.

Each study lives in its own journal (``RESULTS/tuning/DATASET/ARCH/ALGORITHM/study.journal``);
optuna-dashboard shows one storage. The dashboard gets one: a snapshot of every journal
copied into memory (each study named ``DATASET ARCH ALGORITHM``), re-read every ``--refresh``
seconds while it serves. The journals are only read (no lock is taken), through the reader
every command shares (bpfree.core.journal: bounded, each line checked); a damaged journal
shows what is before its damage, with one line on stderr saying where. The storage the
dashboard sees refuses every write, and a request that would write (any method but GET and
HEAD) is answered 403 without reaching it, so nothing a browser does (a note, a deleted
study) reaches the results.

Needs the optional extra: ``pip install -e ".[dashboard]"`` (optuna-dashboard)."""

from __future__ import annotations

import argparse
import glob
import io
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bpfree.commands.common import add_results_arguments, int_in, results_of, seconds_in
from bpfree.core.errors import BpfreeError
from bpfree.core.outputs import STUDY_JOURNAL, study_file
from bpfree.workflow.grid import slug_to_arch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="every study's journal in one optuna-dashboard page (read-only)",
        description=__doc__.split("\n\n")[0],
    )
    add_results_arguments(p, "whose studies it shows")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument(
        "--port", type=int_in(0, 65535), default=8080, help="port, 0 to 65535 (default: 8080; 0: any free one, printed)"
    )
    p.add_argument(
        "--refresh",
        type=seconds_in(0.1, 86400),
        default=30.0,
        help="seconds between re-reads of the journals, 0.1 to 86400 (default: 30)",
    )
    p.add_argument(
        "--stop-after",
        type=seconds_in(0, 10**9),
        default=None,
        metavar="SECONDS",
        help="stop serving after this many seconds (default: until interrupted)",
    )
    p.set_defaults(func=run)


def journals(results: str | Path) -> list[tuple[str, Path]]:
    """(study name, journal) for every study under RESULTS/tuning, sorted."""

    found = []
    for path in sorted(
        map(Path, glob.glob(study_file(STUDY_JOURNAL, "*", "*", "*", results=glob.escape(str(results)))))
    ):
        algorithm, slug, dataset = path.parent.name, path.parent.parent.name, path.parent.parent.parent.name
        found.append((f"{dataset} {slug_to_arch(slug)} {algorithm}", path))
    return found


def snapshot(results: str | Path, problems: dict[Path, str] | None = None):
    """An in-memory Optuna storage holding a copy of every study's journal, each read as
    every command reads one (bpfree.core.journal.read_journal): what is before a damaged
    line is shown. ``problems`` (if given) gets each journal that is damaged or could not be
    read, with why."""
    import optuna
    from optuna.storages import InMemoryStorage

    from bpfree.core.journal import read_journal

    storage = InMemoryStorage()
    for name, path in journals(results):
        try:
            journal = read_journal(path)
        except BpfreeError as err:
            if problems is not None:
                problems[path] = f"not shown: {err}"
            continue
        if journal.damage is not None and problems is not None:
            shown = f"its first {journal.entries} entries shown" if journal.entries else "nothing shown"
            problems[path] = f"damaged at {journal.damage}; {shown}"
        for index, study in enumerate(journal.studies):  # a bpfree journal holds one
            label = name if index == 0 else f"{name} ({study.name})"
            copy = optuna.create_study(storage=storage, study_name=label, directions=study.directions)
            for key, value in study.user_attrs.items():
                copy.set_user_attr(key, value)
            copy.add_trials(study.trials)
    return storage


WRITES = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "create_new_trial",
    "set_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
)


def make_storage(results: str | Path, problems: dict[Path, str] | None = None):
    """A read-only Optuna storage over a snapshot of every journal: reads go to the snapshot
    (``storage.inner``, swapped for a fresh one by the refresher), every write is refused."""
    from optuna.storages import BaseStorage

    def refuse(name: str):
        def write(self, *args: Any, **kwargs: Any) -> Any:
            raise PermissionError(f"bpfree dashboard is read-only ({name} refused)")

        return write

    def delegate(name: str):
        def read(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(self.inner, name)(*args, **kwargs)

        return read

    methods: dict[str, Any] = {name: refuse(name) for name in WRITES}
    for name in sorted(BaseStorage.__abstractmethods__ - set(WRITES)):
        methods[name] = delegate(name)
    ReadOnly = type("ReadOnly", (BaseStorage,), methods)
    storage = ReadOnly()
    storage.inner = snapshot(results, problems)
    return storage


READ_ONLY = b'{"reason": "bpfree dashboard is read-only: nothing is written to the results"}'


def read_only(app):
    """``app`` behind a gate: a request that would write (any method but GET and HEAD) is
    answered 403 with a reason optuna-dashboard shows, and never reaches the app; an error of
    the app is one line on stderr (the WSGI server's log), not a stack."""

    def gate(environ: dict[str, Any], start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() not in ("GET", "HEAD"):
            start_response(
                "403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(READ_ONLY)))]
            )
            return [READ_ONLY]
        environ["wsgi.errors"] = _OneLine(environ.get("PATH_INFO", ""))
        return app(environ, start_response)

    return gate


class _OneLine:
    """A WSGI error stream that prints the last line of what it was given (a traceback's
    last line: the error) as one line on stderr."""

    def __init__(self, path: str) -> None:
        self.path, self.text = path, ""

    def write(self, text: str) -> None:
        self.text += text

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        lines = [line for line in self.text.splitlines() if line.strip()]
        if lines:
            print(f"bpfree dashboard: {self.path}: {lines[-1].strip()}", file=sys.stderr)
        self.text = ""


def run(args: argparse.Namespace) -> int:
    try:
        import optuna_dashboard
    except ImportError:
        raise BpfreeError(
            'optuna-dashboard is not installed: pip install -e ".[dashboard]" (or pip install optuna-dashboard)'
        ) from None
    results = results_of(args.results, args.configfile)
    if not results.is_dir():
        raise BpfreeError(f"no results folder at {results} (--results: the workflow's results folder)")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problems: dict[Path, str] = {}
    storage = make_storage(results, problems)
    studies = journals(results)
    if not studies:
        print(f"bpfree dashboard: no study journal under {results / 'tuning'} yet", file=sys.stderr)
    for path, problem in problems.items():
        print(f"bpfree dashboard: journal {path}: {problem}", file=sys.stderr)

    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        """No access log; a request that fails in the server (a client gone before its answer,
        under load) is one line, not wsgiref's stack."""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

        def get_stderr(self):
            return self._errors

        def handle(self) -> None:
            self._errors = io.StringIO()
            super().handle()
            text = self._errors.getvalue().strip()
            if text:
                print(f"bpfree dashboard: a request failed: {text.splitlines()[-1]}", file=sys.stderr)

    app = read_only(optuna_dashboard.wsgi(storage))
    try:
        server = make_server(args.host, args.port, app, handler_class=Quiet)
    except OSError as err:
        raise BpfreeError(f"cannot serve on {args.host}:{args.port}: {err.strerror or err}") from None
    port = server.server_port
    print(
        f"bpfree dashboard: {len(studies)} studies from {results} at http://{args.host}:{port}/ "
        f"(read-only; re-read every {args.refresh:g} s; Ctrl-C stops)",
        flush=True,
    )
    stop = threading.Event()

    def refresh() -> None:
        told = dict(problems)  # each journal's problem is said once, and again when it changes
        while not stop.wait(args.refresh):
            found: dict[Path, str] = {}
            try:
                storage.inner = snapshot(results, found)
            except Exception as err:  # noqa: BLE001 - the next round; one line, never a stack
                print(f"bpfree dashboard: refresh skipped ({type(err).__name__}: {err})", file=sys.stderr)
                continue
            for path, problem in found.items():
                if told.get(path) != problem:
                    print(f"bpfree dashboard: journal {path}: {problem}", file=sys.stderr)
            told = found

    threading.Thread(target=refresh, daemon=True).start()
    timer = None
    if args.stop_after is not None:
        timer = threading.Timer(args.stop_after, server.shutdown)
        timer.daemon = True  # Ctrl-C before it fires ends the process at once
        timer.start()

    def interrupt(signum: int, frame: Any) -> None:
        # the server stops after the request it may be answering: raised inside one, the
        # interrupt was caught by wsgiref, which printed its stack and served on
        threading.Thread(target=server.shutdown, daemon=True).start()

    # SIGTERM (a job's end, `kill`) and SIGINT stop it cleanly, even where SIGINT came in
    # ignored (a process started in the background of a script)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    started = time.monotonic()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if timer is not None:
            timer.cancel()
        server.server_close()
    print(f"bpfree dashboard: stopped after {time.monotonic() - started:.0f} s", flush=True)
    return 0
