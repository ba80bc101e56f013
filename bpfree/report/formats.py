"""Numbers and tables for reading: times, energies (always with their source), shares, CO2, and
the Markdown and LaTeX renderings of a table."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: bpfree status reads these without polars
    import polars as pl


# -- units: one per figure or table column, picked from the numbers it shows -------------------
@dataclass(frozen=True)
class Unit:
    """A unit of a quantity: ``size`` is how many base units (s, J, MiB, kg) it holds."""

    name: str
    size: float

    def of(self, value: float | None) -> float | None:
        """``value`` (in base units) in this unit."""
        return None if value is None else value / self.size


# each quantity's units, smallest first, in its base unit: seconds, joules, MiB, kg. Memory
# is always MiB (the runs measure mebibytes) and CO2 always grams, so that every table and
# figure shows them in one unit; time and energy scale with the numbers.
UNITS: dict[str, tuple[Unit, ...]] = {
    "time": (Unit("s", 1.0), Unit("min", 60.0), Unit("h", 3600.0)),
    "energy": (Unit("J", 1.0), Unit("kJ", 1e3), Unit("kWh", 3.6e6)),
    "memory": (Unit("MiB", 1.0),),
    "co2": (Unit("g", 1e-3),),
}


def unit_for(quantity: str, values: Iterable[float | None] = ()) -> Unit:
    """The largest of ``quantity``'s units in which the largest of ``values`` (in base
    units; None and NaN ignored) is at least 1: 300 s -> min, 5,000 J -> kJ, 0.4 J -> J."""
    units = UNITS[quantity]
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    return next((u for u in reversed(units) if top >= u.size), units[0])


def amount(value: float | None, quantity: str, digits: int = 3) -> str:
    """One value in the unit picked for it alone, ``digits`` significant: ``1.5 min``, ``281 J``."""
    if value is None or not math.isfinite(value):
        return "–"
    unit = unit_for(quantity, [value])
    return f"{fixed(unit.of(value), digits)} {unit.name}"


# -- shown -------------------------------------------------------------------------------------
def hours(seconds: float | None) -> str:
    """A time in s, min or h (whichever it is at least one of)."""
    return amount(seconds, "time")


def energy_text(joules: float | None, source: str | None) -> str:
    if joules is None:
        return "not measured"
    text = amount(joules, "energy")
    return f"{text} ({source})" if source else text


def percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def co2_text(kg: float | None) -> str:
    """CO2 in grams (every table's CO2 unit), three significant digits: ``0.000735 g``."""
    return amount(kg, "co2")


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


def fixed(value, digits: int = 3, scale: float = 1.0) -> str:
    """``digits`` significant digits without an exponent: 1530, 96.6, 0.000735 (a unit picked
    by :func:`unit_for` keeps the number of digits before the point small)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return num(value)
    value *= scale
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    # rounding may add a digit (9.996 -> 10.00): one decimal fewer then
    return (
        f"{value:.{decimals - 1}f}"
        if decimals and len(text.replace("-", "").replace(".", "").lstrip("0")) > digits
        else text
    )


def estimate(row: dict, column: str, digits: int | None = 2, scale: float = 1.0) -> str:
    """``mean ± sd [ci_low, ci_high]`` of one metric of a methods row; ``digits`` None: three
    significant digits (a CO2 of 1e-4 g on digits, a loss of 0.04 or of 1.66)."""
    mean = row.get(f"{column}_mean")
    if mean is None:
        return "–"

    def show(value):
        return fixed(value, 3, scale) if digits is None else num(value, digits, scale)

    text = show(mean)
    sd = row.get(f"{column}_sd")
    if sd is not None and math.isfinite(sd):
        low, high = row[f"{column}_ci_low"], row[f"{column}_ci_high"]
        text += f" ± {show(sd)} [{show(low)}, {show(high)}]"
    return text


def with_source(text: str, source: str | None) -> str:
    return f"{text} ({source})" if source and text != "–" else text


def to_markdown(frame: pl.DataFrame, note: str | None = None) -> str:
    """A Markdown table; ``note``: a line below it (what its intervals are, say)."""

    def cell(value) -> str:
        return ("" if value is None else str(value)).replace("|", r"\|")

    lines = ["| " + " | ".join(map(cell, frame.columns)) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in frame.iter_rows()]
    if note:
        lines += ["", note]
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


def latex_text(value) -> str:
    """``value`` as LaTeX text, its special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in ("" if value is None else str(value)))


def to_latex(frame: pl.DataFrame, note: str | None = None) -> str:
    """A booktabs tabular (\\usepackage{booktabs}); ``note``: a paragraph below it."""
    cell = latex_text

    lines = [
        rf"\begin{{tabular}}{{{'l' * frame.width}}}",
        r"\toprule",
        " & ".join(map(cell, frame.columns)) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(map(cell, row)) + r" \\" for row in frame.iter_rows()]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if note:
        lines += ["", cell(note)]
    return "\n".join(lines) + "\n"
