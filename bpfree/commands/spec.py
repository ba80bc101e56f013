"""``bpfree spec``: write a run's complete, resolved spec.yaml (every default filled in)
from a config file, a params file and the subject flags, without training. The workflow runs
it for every run; ``bpfree train --spec FILE`` then runs exactly that."""

from __future__ import annotations

import argparse

from bpfree.commands.train import add_spec_arguments, spec_from_args
from bpfree.core.io import output_file, remove_stale_temporaries, write_text_atomic
from bpfree.core.spec import dump_yaml
from bpfree.engine.resolve import resolve


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spec", help="write a run's resolved spec.yaml (for bpfree train --spec)")
    add_spec_arguments(p)
    p.add_argument("--out", required=True, help="the spec.yaml to write")
    p.set_defaults(func=run, plugins=True, spec=None)


def run(args: argparse.Namespace) -> int:
    out = output_file(args.out, "--out")
    spec = resolve(spec_from_args(args))
    # its own temporary of a write a kill interrupted (each spec file has one writer: its job)
    remove_stale_temporaries(out.parent, of=lambda name: name == out.name)
    write_text_atomic(out, dump_yaml(spec))
    print(f"{spec.algorithm} {spec.arch} on {spec.dataset} seed {spec.seed} -> {args.out}")
    return 0
