"""Training curves as a self-contained HTML page: one inline SVG line chart per metric.

Reads the rows of a metrics.jsonl (rl/trainer.py) and draws each requested metric against "step", one
line per series (population members, or the runs of a sweep). No plotting library: the charts are SVG
polylines, so the page opens anywhere and adds no dependency.
"""

from __future__ import annotations

import html
import math
import os

from taskmem_jax.io import atomic_write_text

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
DEFAULT_METRICS = ("reward", "pass_rate", "faithfulness", "redundancy", "format_failure", "memory_tokens",
                   "reward/richness", "reward/thinking", "grad_norm", "step_s")


def _chart(name: str, series: dict[str, list[tuple[float, float]]], width: int = 360, height: int = 200) -> str:
  points = [(x, y) for pts in series.values() for x, y in pts if math.isfinite(y)]
  if not points:
    return ""
  pad = 36
  x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
  y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
  if x1 == x0:
    x1 = x0 + 1
  if y1 == y0:
    y0, y1 = y0 - 0.5, y1 + 0.5
  sx = lambda x: pad + (x - x0) / (x1 - x0) * (width - 1.5 * pad)
  sy = lambda y: height - pad + (y - y0) / (y1 - y0) * (2 * pad - height)
  parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(name)}</text>',
           f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad / 2}" y2="{height - pad}" stroke="#999"/>',
           f'<line x1="{pad}" y1="{pad / 2}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
           f'<text x="{pad - 4}" y="{sy(y1) + 4}" text-anchor="end" font-size="10">{y1:.3g}</text>',
           f'<text x="{pad - 4}" y="{sy(y0) + 4}" text-anchor="end" font-size="10">{y0:.3g}</text>',
           f'<text x="{sx(x0)}" y="{height - pad + 14}" font-size="10">{x0:g}</text>',
           f'<text x="{sx(x1)}" y="{height - pad + 14}" text-anchor="end" font-size="10">{x1:g} (step)</text>']
  for k, (label, pts) in enumerate(series.items()):
    pts = [(x, y) for x, y in pts if math.isfinite(y)]
    colour = PALETTE[k % len(PALETTE)]
    if len(pts) == 1:
      parts.append(f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" fill="{colour}"/>')
    elif pts:
      coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
      parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
  parts.append("</svg>")
  return "".join(parts)


def write_curves(path: str | os.PathLike, rows_by_series: dict[str, list[dict]], *, title: str,
                 metrics=DEFAULT_METRICS, notes: str = "") -> None:
  """rows_by_series: {series label: metrics rows with "step"}; one chart per metric any row has."""
  charts = []
  for name in metrics:
    series = {label: [(float(r["step"]), float(r[name])) for r in rows if isinstance(r.get(name), (int, float))]
              for label, rows in rows_by_series.items()}
    chart = _chart(name, series)
    if chart:
      charts.append(chart)
  legend = " ".join(f'<span style="color:{PALETTE[k % len(PALETTE)]}">&#9632; {html.escape(label)}</span>'
                    for k, label in enumerate(rows_by_series))
  page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
          f"<body style='font-family:sans-serif;margin:2em'><h2>{html.escape(title)}</h2><p>{legend}</p>"
          f"<p>{html.escape(notes)}</p><div>{''.join(charts)}</div></body></html>")
  atomic_write_text(path, page)
