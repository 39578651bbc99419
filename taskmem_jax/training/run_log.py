"""A training loop's record: metric rows to workdir/metrics.jsonl and TensorBoard (workdir/tb), and a tqdm bar.

SFT, the vision stage, Phase One and Phase-Two DPO all log through it. Only the primary process
(jax.process_index() == 0) writes; the other processes read what was written before. A resumed run keeps
the rows up to its checkpoint's step (`earlier`) and rewrites the file without the later ones, which it
appends again as it redoes those steps.
"""

from __future__ import annotations

import json
import os

import jax
from tqdm import tqdm

from taskmem_jax.io import read_jsonl, resume_jsonl
from taskmem_jax.tensorboard import SummaryWriter


class RunLog:
  """workdir None: nothing is written, only the bar shows. jsonl=False: TensorBoard only."""

  def __init__(self, workdir: str | None, *, desc: str, total: int, start: int = 0, progress: bool = True,
               jsonl: bool = True):
    self.primary = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl") if workdir and jsonl else None
    self.earlier = [] if self.path is None else (resume_jsonl if self.primary else read_jsonl)(self.path, start)
    self.writer = SummaryWriter(os.path.join(workdir, "tb")) if workdir and self.primary else None
    self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", disable=not (progress and self.primary))

  def write(self, rows: list[dict], tag_prefix: str = "") -> None:
    """Each row ({"step": s, name: value, ...}) as a line of metrics.jsonl, and its float values as
    TensorBoard scalars tag_prefix + name at step s."""
    if not self.primary:
      return
    if self.path is not None:
      with open(self.path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
    if self.writer is not None:
      for row in rows:
        self.writer.scalars(row["step"], {tag_prefix + k: v for k, v in row.items()
                                          if k != "step" and isinstance(v, float)})

  def close(self) -> None:
    self.bar.close()
    if self.writer is not None:
      self.writer.close()
