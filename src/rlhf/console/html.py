"""Escaped-by-default HTML building and server-side SVG charts.

`h(template, *values, **values)` formats a constant template with every value escaped
unless it is already `Html` (the output of `h` or `join`). Model output and user text
therefore always render as text: `<script>` arrives in the page as `&lt;script&gt;`.
"""

from __future__ import annotations

import html as _html
from collections.abc import Iterable, Sequence


class Html(str):
    """A string that is already safe HTML."""

    __slots__ = ()


def esc(value: object) -> Html:
    if isinstance(value, Html):
        return value
    if isinstance(value, int | float):  # numbers are safe; keep them for format specs
        return value  # type: ignore[return-value]
    return Html(_html.escape("" if value is None else str(value), quote=True))


def h(template: str, *args: object, **kwargs: object) -> Html:
    return Html(template.format(*(esc(a) for a in args), **{k: esc(v) for k, v in kwargs.items()}))


def join(parts: Iterable[object], sep: str = "") -> Html:
    return Html(sep.join(str(esc(p)) for p in parts))


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}"


# -- charts ---------------------------------------------------------------------------
COLORS = ("#2563eb", "#dc2626", "#059669", "#9333ea", "#d97706", "#0891b2")


def line_chart(
    title: str,
    series: dict[str, Sequence[tuple[float, float]]],
    width: int = 360,
    height: int = 160,
) -> Html:
    """An inline SVG line chart: one polyline per series of (x, y) points."""
    points = [p for values in series.values() for p in values]
    if not points:
        return h('<p class="muted chart-empty">{}: no data yet</p>', title)
    left, right, top, bottom = 60, 8, 22, 22
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        h(
            '<svg class="chart" role="img" width="{w}" height="{hh}" viewBox="0 0 {w} {hh}" '
            'xmlns="http://www.w3.org/2000/svg"><title>{t}</title>',
            w=width,
            hh=height,
            t=title,
        ),
        h('<text x="{}" y="14" class="chart-title">{}</text>', left, title),
        h(
            '<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#cbd5e1"/>',
            left,
            top,
            plot_w,
            plot_h,
        ),
        h(
            '<text x="{}" y="{}" class="axis" text-anchor="end">{}</text>',
            left - 4,
            top + 8,
            fmt(y1, 3),
        ),
        h(
            '<text x="{}" y="{}" class="axis" text-anchor="end">{}</text>',
            left - 4,
            top + plot_h,
            fmt(y0, 3),
        ),
        h(
            '<text x="{}" y="{}" class="axis">step {}</text>',
            left,
            height - 6,
            fmt(x0, 6),
        ),
        h(
            '<text x="{}" y="{}" class="axis" text-anchor="end">{}</text>',
            width - right,
            height - 6,
            fmt(x1, 6),
        ),
    ]
    for i, (name, values) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        if len(values) == 1:
            x, y = values[0]
            parts.append(
                h('<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="{}"/>', sx(x), sy(y), color)
            )
        else:
            parts.append(
                h(
                    '<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>',
                    color,
                    coords,
                )
            )
        parts.append(
            h(
                '<text x="{}" y="{}" class="legend" fill="{}">{}</text>',
                left + 6 + 120 * (i % 2),
                top + 12 + 12 * (i // 2),
                color,
                name,
            )
        )
    parts.append(Html("</svg>"))
    return join(parts)


def progress_bar(step: int, total: int, width: int = 160) -> Html:
    share = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
    label = f"{step}/{total}" if total > 0 else str(step)
    return h(
        '<svg class="progress" width="{w}" height="14" role="img" '
        'xmlns="http://www.w3.org/2000/svg"><title>{label}</title>'
        '<rect width="{w}" height="14" fill="#e2e8f0"/>'
        '<rect width="{done:.1f}" height="14" fill="#2563eb"/></svg> {label}',
        w=width,
        done=share * width,
        label=label,
    )
