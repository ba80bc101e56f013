"""Tier 1: architectures built by name from a spec such as ``mlp:1000,1000`` or
``cnn:32,128,512`` (``arch``), registered in ``ARCHITECTURES``. Imports core."""

from bpfree.models.arch import ArchSpec, build_body, parse_arch
from bpfree.models.cnn import CNN, ConvBlock
from bpfree.models.mlp import MLP

__all__ = ["ArchSpec", "CNN", "ConvBlock", "MLP", "build_body", "parse_arch"]
