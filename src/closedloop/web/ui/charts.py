"""Geometry for the server-rendered SVG charts (the templates draw them, with a data table
beside each): bars and sparklines, plain numbers in, coordinates out."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bar", "bars", "sparkline"]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float
    css: str = ""


def bars(
    items: list[tuple[str, float, str]],
    *,
    width: float = 600,
    height: float = 160,
    gap: float = 4,
    baseline: float = 0,
) -> list[Bar]:
    """Vertical bars for (label, value, css class); negative values hang below `baseline`
    when it is given as the share of the height above zero."""
    if not items:
        return []
    top = max([v for _l, v, _c in items] + [0.0])
    bottom = min([v for _l, v, _c in items] + [0.0])
    span = (top - bottom) or 1.0
    zero = height * (top / span)
    step = width / len(items)
    out = []
    for i, (label, value, css) in enumerate(items):
        h = abs(value) / span * height
        y = zero - h if value >= 0 else zero
        out.append(Bar(label, value, i * step + gap / 2, y, max(step - gap, 1), max(h, 0.5), css))
    return out


def sparkline(values: list[float], *, width: float = 120, height: float = 24) -> str:
    """An SVG path through `values` (oldest first), scaled into the box."""
    if not values:
        return ""
    if len(values) == 1:
        values = values * 2
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    points = [
        f"{i * step:.1f},{height - (v - low) / span * (height - 2) - 1:.1f}"
        for i, v in enumerate(values)
    ]
    return "M" + " L".join(points)


def nps_bars(
    items: list[tuple[str, int, int]], *, width: float = 440, height: float = 120
) -> list[Bar]:
    """NPS per period on a fixed scale from -100 to +100 (zero in the middle), so periods
    and surveys compare; each bar's label is the period, its value the NPS."""
    if not items:
        return []
    middle = height / 2
    step = width / max(len(items), 1)
    out = []
    for i, (label, nps, _n) in enumerate(items):
        h = max(abs(nps) / 100 * middle, 1.0)
        y = middle - h if nps >= 0 else middle
        css = "nps-up" if nps >= 0 else "nps-down"
        out.append(Bar(label, float(nps), i * step + 3, y, max(step - 6, 1), h, css))
    return out
