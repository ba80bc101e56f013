"""bpfree: backpropagation-free training (FF, CaFo, MF) next to BP twins, measured honestly."""

__version__ = "0.1.0"
