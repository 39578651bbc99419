"""What every benchmark loader yields: streams (one or more video files played in order) and questions.

The paper recasts VideoMME, EgoLife and EgoTempo as streams (taskmem-spec.md §4, paper-notes.md §4): the
agent memorises a stream clip by clip as it plays, and each question is asked after a given time and
answered from memory only. A loader turns a benchmark's public annotation files plus a video folder into
`Stream`s; a row it cannot use (missing video, malformed fields) becomes a `LoadError` in
`Benchmark.errors` and is counted, and loading goes on.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Question:
  """qid: unique within the benchmark. task: the question type (one task of the protocol). options: the
  choices' texts without their letters (empty for free-form questions). answer: the correct letter
  ("A".."D") for multiple choice, the reference answer text for free-form. ask_after: seconds into the
  stream after which the question is asked (the stream's end for VideoMME / EgoTempo; query_time for
  EgoLife). meta: anything else the row carries (target time, keywords, ...)."""
  qid: str
  task: str
  text: str
  options: tuple[str, ...]
  answer: str
  ask_after: float
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def multiple_choice(self) -> bool:
    return bool(self.options)


@dataclasses.dataclass(frozen=True)
class Segment:
  """One video file of a stream: path, and where it starts in stream time (seconds)."""
  path: str
  start: float


@dataclasses.dataclass(frozen=True)
class Stream:
  """sid: unique within the benchmark. segments: the files in play order (one for VideoMME / EgoTempo, a
  day's 30-s files for EgoLife). duration: seconds of stream time, or None to read it from the files.
  subtitles: an .srt path (stream time) or None. tracks: a face-track JSON path or None (see
  processing/overlay.py). questions: in asking order."""
  sid: str
  segments: tuple[Segment, ...]
  questions: tuple[Question, ...]
  duration: float | None = None
  subtitles: str | None = None
  tracks: str | None = None
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LoadError:
  """A row or file the loader skipped: where (file and row / key) and why."""
  where: str
  why: str


@dataclasses.dataclass
class Benchmark:
  """name: videomme | egolife | egotempo. streams: usable streams. errors: what was skipped, and why."""
  name: str
  streams: list[Stream]
  errors: list[LoadError] = dataclasses.field(default_factory=list)

  @property
  def tasks(self) -> list[str]:
    return sorted({q.task for s in self.streams for q in s.questions})

  def num_questions(self) -> int:
    return sum(len(s.questions) for s in self.streams)
