"""The paper's own numbers (arXiv 2509.19063; ``bpfree/data/paper_results.csv``, package data),
with its architectures in bpfree's notation: what the ``paper`` and ``claims`` tables set ours beside."""

from __future__ import annotations

from importlib import resources

import polars as pl


def paper_results() -> pl.DataFrame:
    """The paper's numbers (package data), with its architectures in our notation."""
    text = resources.files("bpfree.data").joinpath("paper_results.csv").read_text()
    paper = pl.read_csv(text.encode())
    return paper.with_columns(pl.col("architecture").map_elements(paper_arch, return_dtype=pl.String).alias("arch"))


def paper_arch(text: str) -> str:
    """The paper's ``mlp 2x1000`` -> ``mlp:1000,1000``; ``cnn 32-128-512`` -> ``cnn:32,128,512``."""
    kind, _, shape = text.strip().partition(" ")
    if "x" in shape:
        depth, width = shape.split("x")
        widths = [width] * int(depth)
    else:
        widths = shape.split("-")
    return f"{kind}:{','.join(widths)}"
