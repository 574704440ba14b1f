"""A grouped bar chart drawn as SVG by the template (templates/console/dashboard.html): this
module only computes the geometry, in the SVG's own units. No script, no style attribute
(the CSP has no `unsafe-inline`): colours come from classes in static/console/more.css."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 12, 28  # margins: the y axis's labels, the x axis's


@dataclass(frozen=True)
class Bar:
    series: str
    x: float
    y: float
    width: float
    height: float
    count: int
    label: str  # the bucket's, for the bar's tooltip


@dataclass(frozen=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True)
class XLabel:
    text: str
    x: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    baseline: float
    bars: list[Bar]
    ticks: list[Tick]
    labels: list[XLabel]


def grouped_bars(
    groups: Sequence[tuple[str, dict[str, int]]], series: Sequence[str], label_every: int = 2
) -> Chart:
    """One group of bars per bucket (`(label, counts)`), one bar per series, on a y axis from
    0 to a round number at or above the largest count."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    largest = max((counts[name] for _label, counts in groups for name in series), default=0)
    top = _round_up(largest)
    slot = plot_width / max(len(groups), 1)
    bar_width = slot * 0.8 / max(len(series), 1)
    bars = []
    labels = []
    for index, (label, counts) in enumerate(groups):
        left = LEFT + index * slot + slot * 0.1
        for number, name in enumerate(series):
            height = plot_height * counts[name] / top
            bars.append(
                Bar(
                    name,
                    round(left + number * bar_width, 2),
                    round(baseline - height, 2),
                    round(bar_width, 2),
                    round(height, 2),
                    counts[name],
                    label,
                )
            )
        if index % label_every == 0:
            labels.append(XLabel(label, round(LEFT + index * slot + slot / 2, 2)))
    ticks = [
        Tick(value, round(baseline - plot_height * value / top, 2)) for value in _tick_values(top)
    ]
    return Chart(WIDTH, HEIGHT, LEFT, baseline, bars, ticks, labels)


def _round_up(value: int) -> int:
    """1, 2, 5, 10, 20, 50... the first at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _tick_values(top: int) -> list[int]:
    # Every top above 5 is 10, 20 or 50 times a power of ten: five equal steps.
    step = 1 if top <= 5 else top // 5
    return list(range(0, top + 1, step))
