"""Training curves: an HTML page of inline SVG line charts, one per metric, and the same charts as one PNG.

Reads the rows of a metrics.jsonl (rl/trainer.py, training/sft.py) and draws each requested metric against
"step", one line per series (population members, or the runs of a sweep). The SVGs are hand-written
polylines, so the page opens anywhere; the PNG grid (matplotlib, eval/plots.py) sits next to the page as
<name>.png, for slides and issues, and the page shows it too.
"""

from __future__ import annotations

import html
import math
import os

from taskmem_jax.eval.plots import pyplot, save_figure
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


def _series(rows_by_series: dict[str, list[dict]], name: str) -> dict[str, list[tuple[float, float]]]:
  """{label: [(step, value)]} of one metric: rows without a number for it are skipped."""
  return {label: [(float(r["step"]), float(r[name])) for r in rows if isinstance(r.get(name), (int, float))]
          for label, rows in rows_by_series.items()}


def write_curves_png(path: str | os.PathLike, rows_by_series: dict[str, list[dict]], *, title: str = "",
                     metrics=DEFAULT_METRICS, columns: int = 3) -> str | None:
  """The charts of write_curves as one PNG grid (columns charts per row), written atomically; returns the
  path, or None when no row has a finite value of any metric (nothing is written then)."""
  charts = []
  for name in metrics:
    series = {label: [(x, y) for x, y in pts if math.isfinite(y)]
              for label, pts in _series(rows_by_series, name).items()}
    if any(series.values()):
      charts.append((name, series))
  if not charts:
    return None
  from matplotlib.lines import Line2D  # lazily: matplotlib costs a second to import

  labels = list(rows_by_series)
  cols = 2 if len(charts) == 4 and columns >= 2 else min(columns, len(charts))  # 2 x 2, not 3 + 1
  rows = math.ceil(len(charts) / cols)
  # A legend under the grid when there are several series: one column for long labels (sweep settings).
  ncol = 0 if len(labels) < 2 else 1 if max(map(len, labels)) > 40 else min(len(labels), 3)
  legend_h = 0.22 * math.ceil(len(labels) / ncol) + 0.1 if ncol else 0.0
  fig, axes = pyplot().subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows + 0.6 + legend_h), squeeze=False)
  for ax, (name, series) in zip(axes.flat, charts):
    for label, pts in series.items():
      if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if len(pts) == 1 else None, markersize=3, linewidth=1.2,
                color=PALETTE[labels.index(label) % len(PALETTE)])
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
  for ax in axes.flat[len(charts):]:
    ax.set_visible(False)
  if ncol:
    handles = [Line2D([], [], color=PALETTE[k % len(PALETTE)]) for k in range(len(labels))]
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
  return save_figure(fig, path)


def write_curves(path: str | os.PathLike, rows_by_series: dict[str, list[dict]], *, title: str,
                 metrics=DEFAULT_METRICS, notes: str = "", png: bool = True) -> None:
  """rows_by_series: {series label: metrics rows with "step"}; one chart per metric any row has. png: also
  write the charts as <path without .html>.png (write_curves_png), shown on the page by relative path."""
  charts = []
  for name in metrics:
    chart = _chart(name, _series(rows_by_series, name))
    if chart:
      charts.append(chart)
  image = ""
  if png:
    png_path = os.path.splitext(os.fspath(path))[0] + ".png"
    if write_curves_png(png_path, rows_by_series, title=title, metrics=metrics):
      name = html.escape(os.path.basename(png_path))
      image = f'<h3>As one image</h3><p><a href="{name}"><img src="{name}" style="max-width:100%"></a></p>'
  legend = " ".join(f'<span style="color:{PALETTE[k % len(PALETTE)]}">&#9632; {html.escape(label)}</span>'
                    for k, label in enumerate(rows_by_series))
  page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
          f"<body style='font-family:sans-serif;margin:2em'><h2>{html.escape(title)}</h2><p>{legend}</p>"
          f"<p>{html.escape(notes)}</p><div>{''.join(charts)}</div>{image}</body></html>")
  atomic_write_text(path, page)
