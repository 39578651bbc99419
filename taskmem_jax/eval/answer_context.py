"""EgoLife's official answer context (taskmem-spec.md §4): the memory of the question's CURRENT one-minute
segment and of every TARGET segment (the row's target_time, which may lie on an earlier day), each under a
"DAYx: from HH:MM:SS:mmm to HH:MM:SS:mmm" heading, in two sections.

Segments are the wall-clock minutes the official segment stems name (…_16190000__…_16200000). What a segment
shows is the memory of the clips that overlap it and had ended by the question (nothing is read from the
future); a segment on a day with no videos, or after the question, is left out.
"""

from __future__ import annotations

import math
from typing import Callable

from taskmem_jax.memory.store import EpisodicMemory

SEGMENT_SECONDS = 60


def format_clock(seconds: float) -> str:
  """Seconds since 00:00 -> "HH:MM:SS:mmm"."""
  ms = int(round(seconds * 1000))
  hours, ms = divmod(ms, 3_600_000)
  minutes, ms = divmod(ms, 60_000)
  secs, ms = divmod(ms, 1000)
  return f"{hours:02d}:{minutes:02d}:{secs:02d}:{ms:03d}"


def span(memory: EpisodicMemory, start: float, end: float) -> EpisodicMemory:
  """The memory of the clips that overlap [start, end) of stream time."""
  i = memory.interval
  return EpisodicMemory(i, {c: d for c, d in memory.items() if c * i < end and (c + 1) * i > start})


class SectionedMemory:
  """Answer context in sections of headed segments; to_string() is what the answerers put in the prompt (as
  EpisodicMemory.to_string())."""

  def __init__(self, sections: list[tuple[str, list[tuple[str, EpisodicMemory]]]]):
    self.sections = sections

  def to_string(self) -> str:
    parts = []
    for title, segments in self.sections:
      parts.append(f"=== {title} clip memories ===")
      parts.extend(f"{heading}\n{memory.to_string()}" for heading, memory in segments)
    return "\n\n".join(parts)

  def __len__(self) -> int:
    return sum(len(m) for _, segments in self.sections for _, m in segments)

  def headings(self) -> list[str]:
    """"SECTION DAYx: from ... to ... (n clips)" per segment, for the answers' record."""
    return [f"{title} {heading} ({len(memory)} clips)" for title, segments in self.sections
            for heading, memory in segments]


def egolife_context(question, memory_of_day: Callable[[int], EpisodicMemory | None]) -> SectionedMemory:
  """The official context of an EgoLife question (meta query_day, query_clock, target [{day, clock,
  stream_time}], ask_after = the query in stream time). memory_of_day(day) -> that day's memory (None when
  the person has no stream that day); the query day's is cut at the question."""
  meta = question.meta
  query_day, query_clock = meta["query_day"], meta["query_clock"]

  def segment(day: int, clock: float, stream_time: float) -> tuple[str, EpisodicMemory] | None:
    if day > query_day or (day == query_day and clock > query_clock):
      return None  # after the question: not yet seen
    memory = memory_of_day(day)
    if memory is None:
      return None
    minute = math.floor(clock / SEGMENT_SECONDS) * SEGMENT_SECONDS
    start = stream_time - (clock - minute)
    if day == query_day:
      i = memory.interval
      memory = EpisodicMemory(i, {c: d for c, d in memory.items() if (c + 1) * i <= question.ask_after + 1e-9})
    return (f"DAY{day}: from {format_clock(minute)} to {format_clock(minute + SEGMENT_SECONDS)}",
            span(memory, start, start + SEGMENT_SECONDS))

  current = segment(query_day, query_clock, question.ask_after)
  targets = [segment(t["day"], t["clock"], t["stream_time"]) for t in meta.get("target", [])
             if t.get("stream_time") is not None]
  return SectionedMemory([("CURRENT", [current] if current else []),
                          ("TARGET", [t for t in targets if t is not None])])
