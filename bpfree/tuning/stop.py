"""A stop signal during ``bpfree tune`` (SLURM's SIGTERM, Ctrl-C): the running trial is
abandoned, not failed. It goes back to the study's queue (WAITING) with its params, is not
counted, and the next worker (or the same command run again) runs it first, so that the study
ends with the trials and best value it would have had without the stop.

:func:`stop_tuning_on_signals` arms the handler while a study runs. It raises
:class:`TuneInterrupted` where the signal lands, except inside :func:`deferred` blocks, the
study's bookkeeping (asking for a trial, telling its end, appending to the journal, writing
the trial table), which finish first: the signal is raised as the outermost such block ends.
So no journal line is cut, no trial is half-asked, and a trial that has ended is told."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class TuneInterrupted(KeyboardInterrupt):
    """A stop signal ended ``bpfree tune``: its running trial (if any) was abandoned, to be
    retried; the same command resumes the study."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.trial: int | None = None  # the abandoned trial's number
        self.epochs = 0  # what the abandoned attempt had trained
        self.time_s = 0.0

    def __str__(self) -> str:
        if self.trial is None:
            what = "no trial was running"
        else:
            what = f"trial {self.trial} abandoned after {self.epochs} epochs (it is run again, not counted)"
        return f"{self.signal_name}: {what}; the same command resumes the study"


class _Stop:
    def __init__(self) -> None:
        self.armed = False
        self.signal: str | None = None  # the first stop signal's name, once one came
        self.pending = False  # it came inside a deferred block: raised as the block ends
        self.depth = 0  # nested deferred() blocks now running

    def request(self, signum: int, frame: object = None) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:  # already stopping: Ctrl-C again stops at once
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signal = name
        print(f"bpfree tune: {name}: abandoning the running trial, then stopping (Ctrl-C: at once)", file=sys.stderr)
        if self.depth:
            self.pending = True
        else:
            raise TuneInterrupted(name)


STOP = _Stop()


@contextmanager
def deferred() -> Iterator[None]:
    """A block a stop signal does not cut: one that lands inside is raised as the outermost
    block ends (only where the handler is armed)."""
    STOP.depth += 1
    try:
        yield
    finally:
        STOP.depth -= 1
    if STOP.armed and STOP.depth == 0 and STOP.pending:
        STOP.pending = False
        raise TuneInterrupted(STOP.signal or "stop")


@contextmanager
def stop_tuning_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`TuneInterrupted` while the block runs (the previous
    handlers come back after it)."""
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, STOP.request) for s in signals}
    STOP.armed, STOP.signal, STOP.pending, STOP.depth = True, None, False, 0
    try:
        yield
    finally:
        STOP.armed = False
        for s, handler in previous.items():
            signal.signal(s, handler)
