"""``KIND:W1,W2,...`` architecture specs, parsed once and passed around as :class:`ArchSpec`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bpfree.core.errors import BpfreeError
from bpfree.core.registry import ARCHITECTURES


@dataclass(frozen=True)
class ArchSpec:
    kind: str  # a registered architecture: "mlp" or "cnn"
    widths: tuple[int, ...]  # hidden widths (mlp) or channels per block (cnn)

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(map(str, self.widths))}"


MAX_WIDTH = 2**31 - 1  # torch cannot even size a layer past int64; nothing sane is this wide


def parse_arch(text: str) -> ArchSpec:
    kind, sep, rest = text.strip().partition(":")
    if kind not in ARCHITECTURES:
        raise BpfreeError(
            f"malformed architecture {text!r}: unknown kind {kind!r}; valid kinds: "
            f"{', '.join(ARCHITECTURES.names())} (e.g. mlp:1000,1000 or cnn:32,128,512)"
        )
    try:
        widths = tuple(int(w) for w in rest.split(",")) if sep else ()
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1 or max(widths) > MAX_WIDTH:
        raise BpfreeError(
            f"malformed architecture {text!r}: expected {kind}:W1,W2,... with integer widths "
            f"from 1 to {MAX_WIDTH} (e.g. mlp:1000,1000 or cnn:32,128,512)"
        )
    return ArchSpec(kind, widths)


def build_body(spec: ArchSpec, input_shape: tuple[int, int, int], **options) -> nn.Module:
    """The hidden layers of ``spec`` (no output head); the module exposes ``out_features``.
    ``options``: the architecture's own (e.g. the MLP's ``init``)."""
    return ARCHITECTURES.get(spec.kind)(spec.widths, input_shape, **options)
