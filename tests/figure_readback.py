"""Read back what a rendered figure shows: its SVG (vl-convert, as ``bpfree figures`` writes
it) split into panels, each with its headers (column, row or facet title), its axes (title,
scale, the range of its tick labels) and its marks' data (Vega writes each mark's fields
into its ``aria-label``). A test compares these with the table the figure was drawn from,
so that a panel under the wrong header, a value in the wrong unit or a missing method fails.

Positions: a header belongs to the panel it sits over (column headers and footers by x, row
headers by y); a facet's own title and the marks and axes inside a cell belong to that cell.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import vl_convert as vlc

TRANSLATE = re.compile(r"translate\(([-\d.e]+)[ ,]\s*([-\d.e]+)\)")
AXIS = re.compile(r"^([XY])-axis(?: titled '(.*)')? for a (\w+) scale with (.*)$")
RANGE = re.compile(r"values from (\S+) to (\S+)$")
DISCRETE = re.compile(r"(\d+) values?: (.*)$")
SIZE = re.compile(r"^M[-\d.]+,[-\d.]+h([\d.]+)v([\d.]+)")
SI = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "µ": 1e-6, "n": 1e-9}
NOT_MARKS = {"axis", "legend", "title", "subtitle", "group mark container"}
ZONES = ("column-header", "row-header", "column-footer", "row-footer")


@dataclass
class Axis:
    orient: str  # "x" or "y"
    title: str | None
    scale: str  # linear, log, discrete, ...
    low: float | None = None  # first and last tick label (continuous scales)
    high: float | None = None
    values: list[str] = field(default_factory=list)  # a discrete scale's values

    def fits(self, values: list[float], slack: float = 2.5) -> bool:
        """True when the ticks are on the values' scale: the largest tick label is within
        ``slack`` times the largest value (either way), and the ticks reach at least half
        way to it. A value drawn in the wrong unit (hours as kWh, J as kJ) fails."""
        if self.low is None or self.high is None or not values:
            return False
        top = max(abs(v) for v in values)
        tick = max(abs(self.low), abs(self.high))
        return top / slack <= tick <= top * slack


@dataclass
class Panel:
    x: float
    y: float
    width: float
    height: float
    headers: list[str] = field(default_factory=list)
    axes: list[Axis] = field(default_factory=list)
    marks: list[dict[str, str]] = field(default_factory=list)

    def axis(self, orient: str) -> Axis:
        found = [a for a in self.axes if a.orient == orient]
        assert len(found) == 1, f"panel {self.headers}: {len(found)} {orient} axes"
        return found[0]

    def marks_of(self, kind: str) -> list[dict[str, str]]:
        return [m for m in self.marks if m["_kind"] == kind]

    def values(self, key: str, kind: str | None = None) -> list[float]:
        return [number(m[key]) for m in self.marks if key in m and (kind is None or m["_kind"] == kind)]


@dataclass
class Figure:
    titles: list[str]
    panels: list[Panel]

    def panel(self, *headers: str) -> Panel:
        """The one panel whose headers include every one of ``headers``."""
        found = [p for p in self.panels if all(h in p.headers for h in headers)]
        assert len(found) == 1, (
            f"{len(found)} panels with headers {headers}; panels: {[p.headers for p in self.panels]}"
        )
        return found[0]

    def headers(self) -> list[list[str]]:
        return [p.headers for p in self.panels]


def number(text: str) -> float:
    """A number as Vega prints it: ``−2`` (U+2212), ``1,200``, ``3M`` (SI prefix), ``1.2e+4``."""
    text = text.strip().replace("−", "-").replace(",", "")
    if text and text[-1] in SI:
        return float(text[:-1]) * SI[text[-1]]
    return float(text)


def parse_axis(label: str) -> Axis | None:
    m = AXIS.match(label)
    if not m:
        return None
    orient, title, scale, rest = m.groups()
    axis = Axis(orient.lower(), title, scale)
    if r := RANGE.search(rest):
        axis.low, axis.high = (number(v) for v in r.groups())
    elif d := DISCRETE.search(rest):
        axis.values = [v.strip() for v in re.split(r", (?:ending with )?", d.group(2))]
    return axis


def parse_mark(kind: str, label: str) -> dict[str, str]:
    """``"a: 1; b: x"`` -> ``{"a": "1", "b": "x"}`` (a value may hold ':' but not '; ';
    a key may hold '; ' where it holds no ': ')."""
    out = {"_kind": kind.removesuffix(" mark")}
    pending = ""  # a key that holds "; " itself (an axis title): joined to what follows
    for part in label.split("; "):
        key, sep, value = (pending + part).partition(": ")
        if sep:
            out[key] = value
            pending = ""
        else:
            pending += part + "; "
    return out


def read_svg(svg: str) -> Figure:
    titles: list[str] = []
    panels: list[Panel] = []
    zoned: list[tuple[str, float, float, object]] = []  # headers and axes outside the cells

    def walk(e: ET.Element, x: float, y: float, cell: Panel | None, zone: str | None, in_cells: bool) -> None:
        if m := TRANSLATE.match(e.get("transform", "")):
            x, y = x + float(m[1]), y + float(m[2])
        cls = e.get("class") or ""
        if in_cells and e.tag.endswith("}g") and not cls:  # one cell of a facet
            size = next((SIZE.match(c.get("d", "")) for c in e if c.tag.endswith("path")), None)
            cell = Panel(x, y, *(float(v) for v in size.groups()) if size else (0.0, 0.0))
            panels.append(cell)
            in_cells = False
        elif "role-scope cell" in cls:
            in_cells = True
        for z in ZONES:
            if f"role-{z}" in cls:
                zone = z
        label, kind = e.get("aria-label"), e.get("aria-roledescription")
        if label and kind == "title":
            text = label.removeprefix("Title text '").removesuffix("'")
            if cell is not None:
                cell.headers.append(text)
            elif zone:
                zoned.append((zone, x, y, text))
            else:
                titles.append(text)
        elif label and kind == "axis":
            axis = parse_axis(label)
            if axis and cell is not None:
                cell.axes.append(axis)
            elif axis and zone:
                zoned.append((zone, x, y, axis))
        elif label and kind and kind not in NOT_MARKS and cell is not None:
            cell.marks.append(parse_mark(kind, label))
        for child in e:
            walk(child, x, y, cell, zone, in_cells)

    walk(ET.fromstring(svg), 0.0, 0.0, None, None, False)
    for zone, x, y, thing in zoned:
        by_x = zone.startswith("column")
        if isinstance(thing, Axis):  # an axis group starts at its panel's left or top edge
            for p in panels:
                if not ((p.x - 1 <= x < p.x + p.width) if by_x else (p.y - 1 <= y < p.y + p.height)):
                    continue
                p.axes.append(thing)
        else:  # a header's text sits over (or beside) its panels' middle
            for p in panels:
                if (p.x <= x <= p.x + p.width) if by_x else (p.y - 1 <= y <= p.y + p.height):
                    p.headers.append(thing)
    return Figure(titles, panels)


def read_chart(chart) -> Figure:
    """Render ``chart`` to SVG as ``bpfree figures`` does and read it back."""
    return read_svg(vlc.vegalite_to_svg(chart.to_dict()))
