"""The Phase-Two task reward model: which of two memories helps more with a task's questions.

The official pair generator (taskmem-spec.md §3.2; TaskMem training/stage2/gen_pairs.py) shows a judge
up to 5 recent questions of one task type (never their answers) and two candidate memories, and asks
which is more useful for answering similar questions, or a tie. It asks in both orders and keeps a
preference only when both calls pick the same memory, which cancels the judge's position bias.

A `TaskJudge` answers one ordered comparison (`prefer`), or many (`prefer_many`, which implementations
may batch). `both_orders` is the debiased comparison. Implementations: synthworld_task.SynthWorldTaskJudge
(infers from the question text which facts such questions need), local_llm.LocalLLMJudge and
http.HTTPJudge.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

MAX_QUESTIONS = 5
TIE = -1


class Preference(NamedTuple):
  """winner: 0 (the first memory shown), 1 (the second), TIE (-1), or None (the judge failed)."""
  winner: int | None
  reason: str = ""

  @property
  def failed(self) -> bool:
    return self.winner is None


class TaskJudge:
  """Base class: subclasses implement prefer (and may override prefer_many to batch)."""

  name = "task_judge"

  def prefer(self, questions: Sequence[str], first: str, second: str) -> Preference:
    """Which memory, as shown (first = 0, second = 1), is more useful for questions like `questions`."""
    raise NotImplementedError

  def prefer_many(self, questions: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[Preference]:
    return [self.prefer(questions, a, b) for a, b in pairs]


def check_questions(questions: Sequence[str]) -> list[str]:
  """The questions as a list of at most MAX_QUESTIONS non-empty strings, or a ValueError naming the problem."""
  if isinstance(questions, str):
    raise TypeError("questions: expected a list of question strings, got one string")
  questions = list(questions)
  if not questions or len(questions) > MAX_QUESTIONS:
    raise ValueError(f"questions: {len(questions)} given; the task judge takes 1 to {MAX_QUESTIONS}")
  for i, q in enumerate(questions):
    if not isinstance(q, str) or not q.strip():
      raise ValueError(f"questions[{i}]={q!r}: expected a non-empty string")
  return questions


def both_orders(judge: TaskJudge, questions: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[Preference]:
  """Per pair (a, b): asks (a, b) and (b, a); returns Preference(0) if both pick a, Preference(1) if both
  pick b, and Preference(None) otherwise (disagreement, a tie in either order, or a failure), with the
  reason."""
  questions = check_questions(questions)
  pairs = list(pairs)
  answers = judge.prefer_many(questions, pairs + [(b, a) for a, b in pairs])
  forward, backward = answers[:len(pairs)], answers[len(pairs):]
  out = []
  for f, r in zip(forward, backward):
    if f.failed or r.failed:
      out.append(Preference(None, f"judge failed: {f.reason if f.failed else r.reason}"))
    elif f.winner == TIE or r.winner == TIE:
      out.append(Preference(None, "tie"))
    elif f.winner == 1 - r.winner:
      out.append(Preference(f.winner))
    else:
      out.append(Preference(None, "the two orders disagree"))
  return out
