"""Numbers and tables for reading: times, energies (always with their source), shares, CO2, and
the Markdown and LaTeX renderings of a table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: bpfree status reads these without polars
    import polars as pl


# -- shown -------------------------------------------------------------------------------------
def hours(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def energy_text(joules: float | None, source: str | None) -> str:
    if joules is None:
        return "not measured"
    if joules >= 3.6e5:
        text = f"{joules / 3.6e6:.3f} kWh"
    else:
        text = f"{joules / 1e3:.2f} kJ" if joules >= 1e3 else f"{joules:.3g} J"
    return f"{text} ({source})" if source else text


def percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def co2_text(kg: float | None) -> str:
    return "–" if kg is None else f"{kg * 1e3:.2f} g"


# -- tables for reading: Markdown and LaTeX -----------------------------------------------
def num(value, digits: int = 2, scale: float = 1.0, sign: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return f"{value * scale:{'+' if sign else ''}.{digits}f}"


def sig(value, digits: int = 4, scale: float = 1.0) -> str:
    """``digits`` significant digits: 96.59, 0.3874, 1.366e-07."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return num(value)
    return f"{value * scale:.{digits}g}"


def estimate(row: dict, column: str, digits: int | None = 2, scale: float = 1.0) -> str:
    """``mean ± sd [ci_low, ci_high]`` of one metric of a methods row; ``digits`` None: three
    significant digits (CO2 spans 1e-4 g on digits to kilograms on the paper's grid)."""
    mean = row.get(f"{column}_mean")
    if mean is None:
        return "–"

    def show(value):
        return sig(value, 3, scale) if digits is None else num(value, digits, scale)

    text = show(mean)
    sd = row.get(f"{column}_sd")
    if sd is not None and math.isfinite(sd):
        low, high = row[f"{column}_ci_low"], row[f"{column}_ci_high"]
        text += f" ± {show(sd)} [{show(low)}, {show(high)}]"
    return text


def with_source(text: str, source: str | None) -> str:
    return f"{text} ({source})" if source and text != "–" else text


def to_markdown(frame: pl.DataFrame) -> str:
    def cell(value) -> str:
        return ("" if value is None else str(value)).replace("|", r"\|")

    lines = ["| " + " | ".join(map(cell, frame.columns)) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in frame.iter_rows()]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "–": "--",
}


def to_latex(frame: pl.DataFrame) -> str:
    """A booktabs tabular (\\usepackage{booktabs})."""

    def cell(value) -> str:
        return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in ("" if value is None else str(value)))

    lines = [
        rf"\begin{{tabular}}{{{'l' * frame.width}}}",
        r"\toprule",
        " & ".join(map(cell, frame.columns)) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(map(cell, row)) + r" \\" for row in frame.iter_rows()]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
