"""The argv lists the tests give ``bpfree train`` (and ``spec``) and ``bpfree tune``, built in
one place: ``train_argv(out=..., seed=1)``, ``tune_argv(storage=..., out=..., arch="mlp:8")``.
A keyword ``max_epochs=2`` is the flag ``--max-epochs 2``; ``extra`` goes last, as given."""

from __future__ import annotations

from os import PathLike
from typing import Any

# a run in a second or two: a tiny MLP, two epochs, one CPU thread, no CodeCarbon, no idle baseline
FAST_TRAIN = [
    *["--arch", "mlp:8", "--max-epochs", "2", "--device", "cpu", "--threads", "1"],
    *["--measure-codecarbon", "off", "--measure-idle-s", "0"],
]


def _flags(**flags: Any) -> list[str]:
    argv: list[str] = []
    for name, value in flags.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def train_argv(
    *extra: str,
    out: str | PathLike | None = None,
    algorithm: str = "bp",
    dataset: str = "digits",
    seed: int | str | None = None,
    arch: str | None = None,
    command: str | None = "train",
    **flags: Any,
) -> list[str]:
    """``[train] --algorithm A --dataset D [--seed S] [--arch X] [--FLAG V ...] [--out OUT] EXTRA...``
    (``command=None``: no subcommand, for ``main(["train", *argv])``; ``"spec"``: bpfree spec)."""
    head = [command] if command else []
    subject = _flags(algorithm=algorithm, dataset=dataset, seed=seed, arch=arch)
    return [*head, *subject, *_flags(**flags), *_flags(out=out), *extra]


def tune_argv(
    *extra: str,
    storage: str | PathLike | None = None,
    out: str | PathLike | None = None,
    algorithm: str = "bp",
    dataset: str = "digits",
    arch: str | None = None,
    n_trials: int | str | None = 1,
    command: str | None = "tune",
    **flags: Any,
) -> list[str]:
    """``[tune] --algorithm A --dataset D [--arch X] --n-trials N [--FLAG V ...] [--storage J] [--out O] EXTRA...``"""
    head = [command] if command else []
    subject = _flags(algorithm=algorithm, dataset=dataset, arch=arch, n_trials=n_trials)
    return [*head, *subject, *_flags(**flags), *_flags(storage=storage, out=out), *extra]
