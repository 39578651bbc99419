"""The judge interface of the Phase-One quality and richness rewards (taskmem-spec.md §2.2).

The official reward asks three judges about the memories one window's rollouts wrote: a video judge
(is the memory faithful to the window?), a text judge (does it repeat the preceding memories, or talk
about boxes, subtitles or the video itself?) and a ranking judge (order the group's valid memories by
unique information). A `Judge` answers all three for one group at a time, so an implementation can batch
or parallelise within the group. Three implementations:
- ground_truth.GroundTruthJudge: SynthWorld's facts, exact;
- local_llm.LocalLLMJudge: a Qwen3-VL checkpoint run by this project, with our prompts;
- http.HTTPJudge: an OpenAI-compatible chat-completions server.
A judge never raises for a judgement it could not make: it returns a failed Verdict / Ranking (ok None),
and the reward zeroes that group's advantages, as the official trainer does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence


@dataclasses.dataclass(frozen=True)
class WindowContext:
  """What a judge may look at for one window.

  clip: index of the new clip in its stream. start, end: the window's span in seconds (the new clip is
  its last 10 s). previous: the preceding memories shown to the policy, oldest first. video: the
  window's frames (processing.video.VideoClip) for video judges, or None. stream: the ground-truth world
  (SynthWorld Stream) when there is one, else None. video_path: the window's source file, if any.
  """
  clip: int
  start: float
  end: float
  previous: tuple[str, ...] = ()
  video: Any = None
  stream: Any = None
  video_path: str | None = None


class Verdict(NamedTuple):
  """ok: True (passes), False (fails), None (the judge could not decide: an error, a malformed reply)."""
  ok: bool | None
  reason: str = ""

  @property
  def failed(self) -> bool:
    return self.ok is None


class Ranking(NamedTuple):
  """order: indices into the ranked descriptions, best first, a permutation; None when ranking failed."""
  order: tuple[int, ...] | None
  reason: str = ""

  @property
  def failed(self) -> bool:
    return self.order is None


class Judge:
  """Base class: subclasses implement the three group-level judgements."""

  name = "judge"

  def faithfulness(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[Verdict]:
    """Per description: True iff it is factually accurate about the window (the video judge)."""
    raise NotImplementedError

  def non_redundancy(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[Verdict]:
    """Per description: True iff it repeats no fact of ctx.previous and has no meta, box or conclusion
    talk (the text judge)."""
    raise NotImplementedError

  def rank(self, ctx: WindowContext, descriptions: Sequence[str]) -> Ranking:
    """The descriptions ordered by unique, non-overlapping information, best first (the ranking judge)."""
    raise NotImplementedError


def read_window(read, descriptions: Sequence[str]):
  """(read(), None), or (None, one failed Verdict per description) when read() raises: an unreadable window
  fails every verdict of the group, never the caller."""
  try:
    return read(), None
  except Exception as e:
    return None, [Verdict(None, f"video: {type(e).__name__}: {e}")] * len(descriptions)


def check_ranking(order, n: int) -> tuple[int, ...] | None:
  """order as a tuple if it is a permutation of range(n), else None."""
  try:
    order = tuple(int(i) for i in order)
  except (TypeError, ValueError):
    return None
  return order if sorted(order) == list(range(n)) else None
