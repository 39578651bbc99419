"""Training curves: one matplotlib PNG grid, a chart per metric, and an HTML page that shows it.

Reads the rows of a metrics.jsonl (rl/trainer.py, training/sft.py) and draws each requested metric against
"step", one line per series (population members, or the runs of a sweep). The PNG sits next to the page as
<name>.png (for slides and issues); the page adds the title, the series' colours and notes.
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
                 metrics=DEFAULT_METRICS, notes: str = "") -> None:
  """rows_by_series: {series label: metrics rows with "step"}. Writes the charts as <path without .html>.png
  (write_curves_png: one chart per metric any row has) and the page at `path` that shows it by relative path."""
  png_path = os.path.splitext(os.fspath(path))[0] + ".png"
  if write_curves_png(png_path, rows_by_series, title=title, metrics=metrics):
    name = html.escape(os.path.basename(png_path))
    body = f'<p><a href="{name}"><img src="{name}" style="max-width:100%"></a></p>'
  else:
    body = "<p>No metric has a finite value yet.</p>"
  legend = " ".join(f'<span style="color:{PALETTE[k % len(PALETTE)]}">&#9632; {html.escape(label)}</span>'
                    for k, label in enumerate(rows_by_series))
  page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
          f"<body style='font-family:sans-serif;margin:2em'><h2>{html.escape(title)}</h2><p>{legend}</p>"
          f"<p>{html.escape(notes)}</p>{body}</body></html>")
  atomic_write_text(path, page)
