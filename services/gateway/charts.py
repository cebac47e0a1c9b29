"""SVG drawn on the server for the programme office: the coverage map and the weekly charts.

No tiles, no scripts, nothing loaded from outside: the shape of a Land emerges from its
Gemeinden' points. Colours are the Okabe-Ito palette (told apart with colour blindness) and
each status has its own shape as well, so the map also reads in black and white. Every point
carries a ``<title>`` (the body's name and status), which browsers show on hover and screen
readers can reach; the ``<desc>`` says in words what the map shows. Styles are presentation
attributes, not a ``<style>`` element: the pages' Content-Security-Policy allows no inline
styles, and an SVG saved on its own looks the same.
"""
from __future__ import annotations

import math
from datetime import date
from html import escape

STATUS_STYLE = {  # drawn in this order: the bodies still without a Lotse on top
    "completed": ("#009E73", "Lotse ausgebildet"),
    "confirmed": ("#0072B2", "Lotse angemeldet"),
    "waitlisted": ("#E69F00", "nur auf der Warteliste"),
    "none": ("#D55E00", "noch niemand"),
}


def _projection(points: list[tuple[float, float]], width: float, margin: float,
                max_height: float):
    """Equirectangular, with longitude shrunk by the cosine of the mean latitude (close enough
    at Germany's scale), fitted to the width; returns (project, height)."""
    lons = [p[0] for p in points]
    lats = [p[1] for p in points]
    shrink = math.cos(math.radians((min(lats) + max(lats)) / 2))
    span_x = max((max(lons) - min(lons)) * shrink, 1e-6)
    span_y = max(max(lats) - min(lats), 1e-6)
    scale = min((width - 2 * margin) / span_x, (max_height - 2 * margin) / span_y)
    height = span_y * scale + 2 * margin
    offset_x = (width - span_x * scale) / 2
    offset_y = (height - span_y * scale) / 2
    west, north = min(lons), max(lats)

    def project(lon: float, lat: float) -> tuple[float, float]:
        return (offset_x + (lon - west) * shrink * scale, offset_y + (north - lat) * scale)
    return project, height


def _mark(status: str, kind: str, x: float, y: float, r: float, title: str) -> str:
    tip = f"<title>{escape(title)}</title>"
    paint = f'class="{status}" fill="{STATUS_STYLE[status][0]}"'
    if kind != "gemeinde":  # a Kreis or Bezirk: a larger square at the centre of its Gemeinden
        s = r * 1.9
        return (f'<rect {paint} stroke="#222" stroke-width=".8" x="{x - s:.1f}" '
                f'y="{y - s:.1f}" width="{2 * s:.1f}" height="{2 * s:.1f}">{tip}</rect>')
    if status == "none":
        return (f'<circle {paint} stroke="#fff" stroke-width=".4" cx="{x:.1f}" cy="{y:.1f}" '
                f'r="{r * 1.15:.2f}">{tip}</circle>')
    if status == "waitlisted":
        s = r * 1.2
        return (f'<path {paint} d="M{x:.1f} {y - s:.1f}l{s:.1f} {2 * s:.1f}'
                f'h{-2 * s:.1f}z">{tip}</path>')
    return f'<circle {paint} cx="{x:.1f}" cy="{y:.1f}" r="{r:.2f}">{tip}</circle>'


def coverage_map(bodies: list[dict], title: str, width: int = 720, max_height: int = 900) -> str:
    """Every body with a position as a mark coloured and shaped by its status, and a legend
    with the count per status."""
    placed = [b for b in bodies if b.get("longitude") is not None and b.get("latitude") is not None]
    counts = {status: sum(1 for b in bodies if b["status"] == status) for status in STATUS_STYLE}
    legend_height = 28 * (len(STATUS_STYLE) + 1) + 16
    project, height = (_projection([(b["longitude"], b["latitude"]) for b in placed], width, 16,
                                   max_height) if placed else (None, 120))
    height = round(height)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + legend_height}" '
        f'width="100%" role="img" aria-labelledby="map-title map-desc" class="coverage-map">',
        f'<title id="map-title">{escape(title)}</title>',
        '<desc id="map-desc">' + escape(
            f"{len(bodies)} förderfähige Kommunen als Punkte an ihrer Lage; "
            + "; ".join(f"{counts[s]} {label}" for s, (_, label) in STATUS_STYLE.items())
            + ". Kreise als Quadrate in der Mitte ihrer Gemeinden.") + "</desc>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fbfbf8"/>',
    ]
    if placed:
        radius = max(1.2, min(4.0, 90 / math.sqrt(len(placed))))
        order = list(STATUS_STYLE)
        for body in sorted(placed, key=lambda b: (b["kind"] == "gemeinde", order.index(b["status"]))):
            x, y = project(body["longitude"], body["latitude"])
            label = f'{body["name"]} ({body["ags"]}): {STATUS_STYLE[body["status"]][1]}'
            parts.append(_mark(body["status"], body["kind"], x, y, radius, label))
    parts.append(f'<g class="legend" font-family="sans-serif" font-size="14" fill="#222" '
                 f'transform="translate(16 {height + 12})">')
    for row, (status, (_, label)) in enumerate(STATUS_STYLE.items()):
        y = row * 28 + 10
        parts.append(_mark(status, "gemeinde", 8, y, 5, label))
        parts.append(f'<text x="24" y="{y + 5}">{escape(label)}: {counts[status]}</text>')
    y = len(STATUS_STYLE) * 28 + 10
    parts.append(f'<rect x="2" y="{y - 6}" width="12" height="12" fill="#fff" stroke="#222"/>'
                 f'<text x="24" y="{y + 5}">Quadrat: Kreis oder Bezirk, in der Mitte seiner '
                 f'Gemeinden</text>')
    parts.append("</g></svg>")
    return "".join(parts)


def _german(iso_day: str) -> str:
    return date.fromisoformat(iso_day).strftime("%d.%m.%Y")


def weekly_chart(series: list[dict], lines: list[tuple[str, str, str]], title: str,
                 unit=lambda v: str(v), width: int = 720, height: int = 260) -> str:
    """A line per (key, label, colour) over ``series`` (dicts with ``week_starting``), with
    the axes labelled at the first, middle and last week and at zero and the top value."""
    left, right, top, bottom = 90, 16, 16, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([1] + [row[key] for row in series for key, _, _ in lines])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 24 * len(lines)}" '
        f'width="100%" role="img" aria-labelledby="chart-title" class="chart">',
        f'<title id="chart-title">{escape(title)}</title>',
        '<g font-family="sans-serif" font-size="13" fill="#222">',
        f'<line stroke="#555" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
        f'y2="{top + plot_h}"/>',
        f'<line stroke="#555" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">{escape(unit(0))}</text>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{escape(unit(peak))}</text>',
    ]
    n = len(series)
    step = plot_w / max(1, n - 1)
    for index in sorted({0, n // 2, n - 1}) if n else []:
        x = left + index * step
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 20}" text-anchor="middle">'
                     f'{_german(series[index]["week_starting"])}</text>')
    for row, (key, label, colour) in enumerate(lines):
        points = " ".join(f"{left + i * step:.1f},{top + plot_h - r[key] / peak * plot_h:.1f}"
                          for i, r in enumerate(series))
        if n > 1:
            parts.append(f'<polyline fill="none" stroke-width="2.5" stroke="{colour}" '
                         f'points="{points}"/>')
        elif n == 1:  # one week so far: a dot, as a line needs two
            x, y = points.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="4" fill="{colour}"/>')
        y = height + 24 * row + 8
        parts.append(f'<rect x="{left}" y="{y - 10}" width="18" height="6" fill="{colour}"/>'
                     f'<text x="{left + 26}" y="{y}">{escape(label)}</text>')
    parts.append("</g></svg>")
    return "".join(parts)
