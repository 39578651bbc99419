"""Acc / Cov / Prec of memory-only question answering, per task and overall (paper-notes.md §4).

Acc = correct / all questions, Cov = answered / all (the answerer did not abstain), Prec = correct /
answered, so Acc = Cov x Prec. Prec is defined as 0.0 when nothing was answered (0/0; a task where the
answerer always abstains gets no credit for precision rather than an undefined value). Scores are
fractions in [0, 1]; ``format_table`` prints percentages.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from taskmem_jax.io import atomic_write_json
from taskmem_jax.tensorboard import SummaryWriter

OVERALL = "overall"


def _counts_to_scores(n: int, answered: int, correct: int) -> dict:
  return {"acc": correct / n, "cov": answered / n, "prec": correct / answered if answered else 0.0,
          "n": n, "answered": answered, "correct": correct}


def score(records: Iterable[Sequence]) -> dict:
  """records: (task, predicted, correct) per question; predicted is an option letter, or None when the
  answerer abstained; correct is the ground-truth letter. Letters are compared exactly.

  Returns {"tasks": {task: scores}, "overall": scores}, tasks in order of first appearance, where scores
  = {"acc", "cov", "prec", "n", "answered", "correct"}.
  """
  counts: dict[str, list[int]] = {}
  for i, record in enumerate(records):
    if isinstance(record, (str, bytes)) or not isinstance(record, Sequence) or len(record) != 3:
      raise ValueError(f"records[{i}]={record!r}: expected (task, predicted letter or None, correct letter)")
    task, predicted, correct = record
    if not isinstance(task, str) or not task:
      raise ValueError(f"records[{i}]: task={task!r} must be a non-empty string")
    if not isinstance(correct, str) or not correct:
      raise ValueError(f"records[{i}]: correct={correct!r} must be the ground-truth letter")
    if predicted is not None and not isinstance(predicted, str):
      raise ValueError(f"records[{i}]: predicted={predicted!r} must be a letter or None (abstain)")
    c = counts.setdefault(task, [0, 0, 0])
    c[0] += 1
    c[1] += predicted is not None
    c[2] += predicted == correct
  if not counts:
    raise ValueError("records: empty; there is nothing to score")
  total = [sum(c[k] for c in counts.values()) for k in range(3)]
  return {"tasks": {task: _counts_to_scores(*c) for task, c in counts.items()},
          OVERALL: _counts_to_scores(*total)}


def format_table(scores: dict) -> str:
  """A markdown table: one row per task, then the overall row; Acc / Cov / Prec in percent, one decimal."""
  rows = [*scores["tasks"].items(), (OVERALL, scores[OVERALL])]
  lines = ["| Task | n | Acc | Cov | Prec |", "|---|---:|---:|---:|---:|"]
  for task, s in rows:
    task = task.replace("|", "\\|")  # a bar would split the cell
    lines.append(f"| {task} | {s['n']} | {100 * s['acc']:.1f} | {100 * s['cov']:.1f} | {100 * s['prec']:.1f} |")
  return "\n".join(lines)


def save_json(scores: dict, path: str | os.PathLike) -> None:
  """Writes the scores as JSON atomically (a temporary file renamed over `path`)."""
  atomic_write_json(path, scores, ensure_ascii=False)


def write_score_events(logdir: str | os.PathLike, scores: dict, *, step: int = 0, prefix: str = "qa") -> None:
  """Acc / Cov / Prec per task and overall as TensorBoard scalars (tags prefix/<task>/acc, ...) at `step`."""
  writer = SummaryWriter(os.fspath(logdir))
  rows = [*scores["tasks"].items(), (OVERALL, scores[OVERALL])]
  writer.scalars(step, {f"{prefix}/{task}/{k}": float(s[k]) for task, s in rows for k in ("acc", "cov", "prec")})
  writer.close()
