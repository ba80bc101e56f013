"""Architectures built by name from a spec such as ``mlp:1000,1000`` or ``cnn:32,128,512``."""

from bpfree.models.cnn import CNN, ConvBlock
from bpfree.models.mlp import MLP
from bpfree.models.spec import ArchSpec, build_body, parse_arch

__all__ = ["ArchSpec", "CNN", "ConvBlock", "MLP", "build_body", "parse_arch"]
