"""PNG figures with matplotlib (Agg backend, so no display is needed): the Acc / Cov / Prec bar chart of a
scores table, and the shared helpers that save figures atomically."""

from __future__ import annotations

import os

import numpy as np

from taskmem_jax.io import atomic_write


def pyplot():
  """matplotlib.pyplot on the Agg backend (imported here: matplotlib costs a second to import)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 90) -> str:
  """Saves `fig` as a PNG at path atomically (a temporary file, then os.replace) and closes it."""
  try:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
  finally:
    pyplot().close(fig)
  return os.fspath(path)


def plot_tasks(scores: dict, path: str | os.PathLike, title: str) -> str:
  """A bar plot of Acc / Cov / Prec per task and overall; scores: {"tasks": {task: {"acc", "cov", "prec"}},
  "overall": {...}} with fractions in [0, 1] (eval.metrics.score). Returns the path."""
  plt = pyplot()
  rows = [*scores["tasks"].items(), ("overall", scores["overall"])]
  x = np.arange(len(rows))
  fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
  for metric, offset in (("acc", -0.27), ("cov", 0.0), ("prec", 0.27)):
    ax.bar(x + offset, [100 * r[metric] for _, r in rows], 0.27, label=metric.capitalize())
  ax.set_xticks(x, [name for name, _ in rows], rotation=30, ha="right")
  ax.set_ylabel("%")
  ax.set_ylim(0, 115)  # headroom for the legend, so it covers no bar
  ax.set_yticks(range(0, 101, 20))
  ax.set_title(title)
  ax.legend(loc="upper center", ncol=3, frameon=False)
  fig.tight_layout()
  return save_figure(fig, path)
