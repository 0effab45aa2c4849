"""Charts drawn on the server as SVG: stacked bars and lines over time buckets.

No JavaScript: the page's refresh swaps in the fragment the server rendered, charts
included, and a browser without scripts still sees them. Colours come from CSS
classes (``pgjobs-dashboard.css``), so both admins' themes can set them.
"""

import datetime
import math

from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from .. import times

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 22


def nice_max(value):
    """A round number at or above ``value`` for the top of the y axis (1, 2, 5 × 10ⁿ)."""
    if not value or value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def format_number(value, unit=""):
    if unit == "s":
        return format_seconds(value)
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_seconds(seconds):
    if seconds is None:
        return "–"
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _frame(starts, step, top, unit, title, body, legend, points):
    """The chart's SVG: axes, labels, ``body`` (marks), and a legend."""
    plot_h = HEIGHT - TOP - BOTTOM
    first = times.local(starts[0])
    last = times.local(starts[-1] + step)
    fmt = "%H:%M" if step < datetime.timedelta(hours=1) else "%d %b %H:%M"
    grid = format_html_join(
        "",
        '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
        '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
        (
            (
                LEFT,
                WIDTH - RIGHT,
                TOP + plot_h * (1 - f),
                TOP + plot_h * (1 - f),
                LEFT - 4,
                TOP + plot_h * (1 - f) + 4,
                format_number(top * f if unit == "s" else round(top * f, 2), unit),
            )
            for f in (0, 0.5, 1)
        ),
    )
    legend_html = format_html_join(
        "",
        '<span class="pgjobs-key pgjobs-key--{}"></span>{} ',
        legend,
    )
    return format_html(
        '<figure class="pgjobs-chart" data-points="{}">'
        '<figcaption>{} <span class="pgjobs-legend">{}</span></figcaption>'
        '<svg viewBox="0 0 {} {}" width="100%" role="img" aria-label="{}">'
        "<title>{}</title>{}{}"
        '<text class="axis" x="{}" y="{}">{}</text>'
        '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>'
        "</svg></figure>",
        points,
        title,
        legend_html,
        WIDTH,
        HEIGHT,
        title,
        title,
        grid,
        body,
        LEFT,
        HEIGHT - 6,
        first.strftime(fmt),
        WIDTH - RIGHT,
        HEIGHT - 6,
        last.strftime(fmt),
    )


def stacked_bars(starts, step, stacks, title, labels=None):
    """Bars per bucket, one segment per key of ``stacks`` (key → counts per bucket)."""
    labels = labels or {}
    totals = [sum(values) for values in zip(*stacks.values(), strict=True)]
    top = nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(starts)
    bars = []
    for i, start in enumerate(starts):
        base = 0
        for key, values in stacks.items():
            value = values[i]
            if not value:
                continue
            h = plot_h * value / top
            y = TOP + plot_h * (1 - (base + value) / top)
            bars.append(
                (
                    key,
                    f"{LEFT + i * slot + slot * 0.1:.1f}",
                    f"{y:.1f}",
                    f"{max(slot * 0.8, 0.5):.1f}",
                    f"{h:.1f}",
                    f"{labels.get(key, key)}: {value} ({times.local(start):%H:%M})",
                )
            )
            base += value
    body = format_html_join(
        "",
        '<rect class="bar bar--{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
        bars,
    )
    legend = [(key, labels.get(key, key)) for key in stacks]
    return _frame(starts, step, top, "", title, body, legend, sum(totals))


def lines(starts, step, series, title, unit="", labels=None):
    """A line per key of ``series`` (key → value or None per bucket); a None breaks it."""
    labels = labels or {}
    values = [v for vs in series.values() for v in vs if v is not None]
    top = nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(starts)
    paths = []
    for key, vs in series.items():
        runs, current = [], []
        for i, v in enumerate(vs):
            if v is None:
                if current:
                    runs.append(current)
                current = []
                continue
            current.append(f"{LEFT + (i + 0.5) * slot:.1f},{TOP + plot_h * (1 - v / top):.1f}")
        if current:
            runs.append(current)
        for run in runs:
            if len(run) == 1:  # a lone point: a dot, not an invisible line
                x, y = run[0].split(",")
                paths.append(
                    format_html('<circle class="line line--{}" cx="{}" cy="{}" r="2"/>', key, x, y)
                )
            else:
                paths.append(
                    format_html('<polyline class="line line--{}" points="{}"/>', key, " ".join(run))
                )
    body = mark_safe("".join(paths))  # each piece was built by format_html
    legend = [(key, labels.get(key, key)) for key in series]
    return _frame(starts, step, top, unit, title, body, legend, len(values))
