"""What every benchmark loader yields: streams (one or more video files played in order) and questions.

The paper recasts VideoMME, EgoLife and EgoTempo as streams (taskmem-spec.md §4, paper-notes.md §4): the
agent memorises a stream clip by clip as it plays, and each question is asked after a given time and
answered from memory only. A loader turns a benchmark's public annotation files plus a video folder into
`Stream`s; a row it cannot use (missing video, malformed fields) becomes a `LoadError` in
`Benchmark.errors` and is counted, and loading goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Iterator

from taskmem_jax.processing.video import video_duration


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
  benchmarks/overlay). questions: in asking order."""
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

  def summary(self) -> str:
    return (f"{self.name}: {len(self.streams)} streams, {self.num_questions()} questions, "
            f"{len(self.tasks)} tasks, {len(self.errors)} load errors")



class AnnotationError(ValueError):
  """The annotation file itself is missing or cannot be parsed (as opposed to one bad row: LoadError)."""


class RowError(ValueError):
  """Raised by a loader's row parser; the loader turns it into a LoadError and goes on."""


def parse_rows(rows: Iterable[tuple[str, Any]], parse: Callable, errors: list[LoadError], id_name: str,
               keep: Callable | None = None) -> Iterator[tuple[str, Any, Question]]:
  """(where, row) pairs -> (where, key, question) for each row that parse(row) -> (key, Question) reads, each
  question id once. A row whose parse raises RowError, that repeats an id, or that keep(question) rejects
  with a RowError becomes a LoadError in `errors`; keep(question) False leaves the row out quietly."""
  seen: set[str] = set()
  for where, row in rows:
    try:
      key, question = parse(row)
      if question.qid in seen:
        raise RowError(f"duplicate {id_name} {question.qid!r}")
      if keep is not None and not keep(question):
        continue
    except RowError as e:
      errors.append(LoadError(where, str(e)))
      continue
    seen.add(question.qid)
    yield where, key, question


def read_annotations(path: str | os.PathLike) -> Any:
  """The parsed annotation file: .jsonl (one object per line), .parquet (needs pyarrow, not a
  dependency), anything else as one JSON document, falling back to JSONL (HF exports use both)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise AnnotationError(f"annotation file not found: {path}")
  if path.endswith(".parquet"):
    return _read_parquet(path)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if not path.endswith(".jsonl"):
    try:
      return json.loads(text)
    except json.JSONDecodeError as e:
      if len(text.strip().splitlines()) < 2:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None
  return _read_jsonl(path, text)


def _read_jsonl(path: str, text: str) -> list:
  rows = []
  for n, line in enumerate(text.splitlines(), 1):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: line {n} is not valid JSON ({e})") from None
  return rows


def _read_parquet(path: str) -> list:
  try:
    import pyarrow.parquet as pq
  except ImportError:
    raise AnnotationError(f"{path}: reading parquet needs pyarrow (not installed); export the rows to "
                          "JSON or JSONL instead") from None
  try:
    return pq.read_table(path).to_pylist()
  except Exception as e:  # pyarrow raises several types for a corrupt file
    raise AnnotationError(f"{path}: not a readable parquet file ({e})") from None


def optional_file(folder: str | os.PathLike | None, name: str) -> str | None:
  """folder/name if folder is given and the file exists there, else None (subtitles, face tracks)."""
  if folder is None:
    return None
  path = os.path.join(os.fspath(folder), name)
  return path if os.path.isfile(path) else None


def check_video_dir(video_dir: str | os.PathLike) -> str:
  video_dir = os.fspath(video_dir)
  if not os.path.isdir(video_dir):
    raise FileNotFoundError(f"video_dir is not a folder: {video_dir}")
  return video_dir


def need(row: dict, key: str, kind: type | tuple[type, ...] = str) -> Any:
  """row[key], which must be present and of `kind` (a non-empty string for str); RowError otherwise."""
  if key not in row or row[key] is None:
    raise RowError(f"missing field {key!r}")
  value, kinds = row[key], kind if isinstance(kind, tuple) else (kind,)
  # bool is an int subclass; a JSON true where a number belongs is still a wrong type.
  if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
    raise RowError(f"field {key!r} must be {_kind_name(kinds)}, got {type(value).__name__}")
  if isinstance(value, str) and not value.strip():
    raise RowError(f"field {key!r} is empty")
  return value


def _kind_name(kinds: tuple[type, ...]) -> str:
  return " or ".join(k.__name__ for k in kinds)


LETTERS = "ABCD"


def answer_letter(value: Any, num_options: int = 4) -> str:
  """A multiple-choice answer as its capital letter; "b", " B", "B." are accepted, anything else is a RowError."""
  if value is None:
    raise RowError("missing field 'answer'")
  if not isinstance(value, str):
    raise RowError(f"field 'answer' must be a letter A-{LETTERS[num_options - 1]}, got {type(value).__name__}")
  letter = value.strip().rstrip(".").upper()
  if len(letter) != 1 or letter not in LETTERS[:num_options]:
    raise RowError(f"bad answer letter {value!r} (expected A-{LETTERS[num_options - 1]})")
  return letter


def single_file_stream(sid: str, path: str, questions: list[Question], *, read_duration: bool,
                       subtitles: str | None = None, tracks: str | None = None,
                       meta: dict[str, Any] | None = None) -> Stream:
  """A one-video stream (VideoMME, EgoTempo) whose questions are all asked after the video ends:
  ask_after = the video's duration when read_duration (the file is probed, RowError if unreadable),
  else +inf, which means "after the whole stream" without opening the file at load time."""
  duration = probe_duration(path) if read_duration else None
  after = float("inf") if duration is None else duration
  questions = [dataclasses.replace(q, ask_after=after) for q in questions]
  return Stream(sid, (Segment(path, 0.0),), tuple(questions), duration=duration, subtitles=subtitles,
                tracks=tracks, meta=dict(meta or {}))


def probe_duration(path: str) -> float:
  try:
    return float(video_duration(path))
  except Exception as e:  # decord raises its own error types for unreadable files
    raise RowError(f"unreadable video {path} ({type(e).__name__}: {e})") from None
