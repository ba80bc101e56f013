"""Read back what a rendered figure shows: its SVG (vl-convert, as ``bpfree figures`` writes
it) split into panels, each with its headers (column, row or facet title), its axes (title,
scale, the range of its tick labels, and each tick label's text and place) and its marks' data
(Vega writes each mark's fields into its ``aria-label``); beside them the figure's titles,
subtitles and legends. A test compares these with the table the figure was drawn from, so
that a panel under the wrong header, a value in the wrong unit, a missing method, tick labels
that run into each other or a legend entry with no mark fails.

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
LEGEND = re.compile(r"^(\w+) legend(?: titled '(.*?)')? for (.*?) with (.*)$")
NOT_MARKS = {"axis", "legend", "title", "subtitle", "group mark container"}
# advance widths (in em) of Liberation Sans, the sans-serif vl-convert draws with (Arial's
# metrics); other characters count as 0.6 em, about an average capital
CHAR_EM = dict.fromkeys("0123456789", 0.556) | dict.fromkeys(",.: ", 0.278) | {"−": 0.584, "-": 0.333}
CHAR_EM |= {"k": 0.5, "M": 0.833, "G": 0.778, "m": 0.833, "µ": 0.576, "%": 0.889, "e": 0.556, "+": 0.584}
ZONES = ("column-header", "row-header", "column-footer", "row-footer")


@dataclass
class Label:
    """One tick label as drawn: its text, anchor point (in its axis' frame), anchor and size."""

    text: str
    x: float
    y: float
    anchor: str  # start, middle, end
    size: float  # font size (px)

    def width(self) -> float:
        return sum(CHAR_EM.get(ch, 0.6) for ch in self.text) * self.size

    def span(self, orient: str) -> tuple[float, float]:
        """Where the label lies along its axis: horizontally on an x axis, vertically on a y axis."""
        if orient == "y":
            return self.y - self.size / 2, self.y + self.size / 2
        left = {"start": self.x, "middle": self.x - self.width() / 2, "end": self.x - self.width()}[self.anchor]
        return left, left + self.width()


@dataclass
class Axis:
    orient: str  # "x" or "y"
    title: str | None
    scale: str  # linear, log, discrete, ...
    low: float | None = None  # first and last tick label (continuous scales)
    high: float | None = None
    values: list[str] = field(default_factory=list)  # a discrete scale's values
    labels: list[Label] = field(default_factory=list)  # the tick labels drawn, in order

    def crowded(self, gap: float = 2.0) -> list[tuple[str, str]]:
        """Neighbouring tick labels less than ``gap`` px apart (their widths estimated from the
        font's metrics): ``1,000`` and ``1,200`` drawn as ``1,0001,200``."""
        spans = sorted((*label.span(self.orient), label.text) for label in self.labels)
        return [(a[2], b[2]) for a, b in zip(spans, spans[1:]) if b[0] - a[1] < gap]

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
class Legend:
    title: str | None
    channels: str  # "fill color", "shape and fill color", ...
    values: list[str]


@dataclass
class Figure:
    titles: list[str]
    panels: list[Panel]
    subtitles: list[str] = field(default_factory=list)
    legends: list[Legend] = field(default_factory=list)

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


def parse_legend(label: str) -> Legend | None:
    m = LEGEND.match(label)
    if not m:
        return None
    _, title, channels, rest = m.groups()
    d = DISCRETE.search(rest)
    values = [v.strip() for v in re.split(r", (?:ending with )?", d.group(2))] if d else []
    return Legend(title, channels, values)


def axis_labels(e: ET.Element) -> list[Label]:
    """The tick labels inside an axis group: each ``<text>`` of its ``role-axis-label`` group."""
    labels = []
    for group in e.iter():
        if "role-axis-label" not in (group.get("class") or ""):
            continue
        for text in group:
            m = TRANSLATE.match(text.get("transform", ""))
            if not text.tag.endswith("text") or not m or text.get("opacity") == "0" or not (text.text or "").strip():
                continue
            size = float((text.get("font-size") or "10px").removesuffix("px"))
            labels.append(Label(text.text or "", float(m[1]), float(m[2]), text.get("text-anchor", "start"), size))
    return labels


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
    subtitles: list[str] = []
    legends: list[Legend] = []
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
        elif label and kind == "subtitle" and cell is None:
            subtitles.append(label.removeprefix("Subtitle text '").removesuffix("'"))
        elif label and kind == "legend":
            if legend := parse_legend(label):
                legends.append(legend)
        elif label and kind == "axis":
            axis = parse_axis(label)
            if axis:
                axis.labels = axis_labels(e)
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
    return Figure(titles, panels, subtitles, legends)


def read_chart(chart) -> Figure:
    """Render ``chart`` to SVG as ``bpfree figures`` does and read it back."""
    return read_svg(vlc.vegalite_to_svg(chart.to_dict()))


# -- units: what a reader expects of the unit a figure or table picked ------------------------------
# each quantity's units and their sizes in its base unit (s, J, MiB), smallest first
UNITS = {
    "time": {"s": 1.0, "min": 60.0, "h": 3600.0},
    "energy": {"J": 1.0, "kJ": 1e3, "kWh": 3.6e6},
    "memory": {"MiB": 1.0},
}
UNIT_IN_TITLE = re.compile(r"\(([^,()]+)[,)]")


def unit_in(title: str) -> str:
    """The unit an axis title or header names first: ``GPU energy (kJ, nvml-counter)`` -> kJ."""
    m = UNIT_IN_TITLE.search(title)
    assert m, f"no unit in {title!r}"
    return m.group(1).strip()


def assert_unit_fits(quantity: str, unit: str, shown: list[float]) -> None:
    """``shown`` (values in ``unit``) are in the unit a reader would pick: the largest is at
    least 1 of it (unless it is the smallest unit) and less than 1 of the next unit up (unless
    it is the largest). Hours for a five-minute study (0.05 h) or kWh for 280 J fail."""
    sizes = UNITS[quantity]
    assert unit in sizes, f"{quantity} in {unit!r}, not one of {list(sizes)}"
    names = list(sizes)
    i = names.index(unit)
    top = max(abs(v) for v in shown)
    if i > 0:
        assert top >= 1, f"{quantity} in {unit}: the largest value shown is {top:g} {unit}; a smaller unit fits"
    if i < len(names) - 1:
        up = sizes[names[i + 1]] / sizes[unit]
        assert top < up, f"{quantity} in {unit}: the largest value shown is {top:g} {unit}; {names[i + 1]} fits"
