"""EgoLife as a streaming benchmark: one stream per recorded day, each question asked at its query time.

Public format (paper-notes.md §6; code MIT, EgoRAG README):
- Videos: 30-s files `A1_JAKE/DAYn/DAYn_A1_JAKE_HHMMSSFF.mp4` (the EgoRAG README also shows them
  without the DAYn folder, so the whole video_dir is searched and only the file name counts).
- EgoLifeQA rows (`EgoLifeQA_A1_JAKE.json`, a list): `ID, query_time {date: "DAY1", time: "11210217"},
  type (EntityLog, EventRecall, HabitInsight, RelationMap, TaskMaster), need_audio, need_name,
  last_time, trigger, question, choice_a..choice_d, answer ("B"), target_time {date, time}, keywords,
  reason`.

Time naming. HHMMSSFF is a wall-clock time of day: hours, minutes, seconds, then FF = the frame within
that second at 20 fps (00-19). We read FF as frames, not centiseconds, because the EgoLife authors'
Ego-R1 code documents its DAYX_HHMMSSFF timestamps as "HHMMSS is the hour, minute, second, and FF is the
frame number(00~19)" and locates files by HHMMSS alone; the public examples (11210217, 11152408,
11094208, 11100000) all fit. `frame_rate=` changes it (100 reads FF as centiseconds); an FF >=
frame_rate is a malformed time. The sub-second part never matters for 10-s memory clips, so the choice
is about rejecting garbage, not about accuracy.

Stream time. A day's stream starts at its first file: segment start = wall clock - the first file's
wall clock, so the gaps between recording sessions are kept (stream.meta["origin"] is the first file's
seconds since 00:00, to convert back). close_gaps=True lays the files end to end instead (each file
lasts min(30 s, time to the next file)), for consumers that cannot skip empty windows; a query or
target time inside a gap then maps to the end of the file before it. A question's ask_after is its
query_time in its day's stream time; target_time is kept in meta (day, seconds since 00:00, and stream
time when its day has videos), since EgoLife questions may ask about earlier days (TaskMem's own EgoLife
test shows the TARGET segments' memories, taskmem-spec.md §4).

Days with videos but no questions are kept as streams: a cross-day question needs them memorised.
Subtitles and face tracks are per stream: <sid>.srt / <sid>.json with sid = "<person>_DAY<n>".
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import re
from typing import Any

from taskmem_jax.benchmarks.base import (
  AnnotationError, Benchmark, LoadError, Question, RowError, Segment, Stream, answer_letter, check_video_dir,
  need, optional_file, parse_rows, read_annotations)

FRAME_RATE = 20.0  # FF in HHMMSSFF counts frames at the 20-fps recording rate
SEGMENT_SECONDS = 30.0  # every EgoLife file covers 30 s
_FILE = re.compile(r"^DAY(\d+)_(A\d+_[A-Za-z]+)_(\w+)\.mp4$")
_DAY = re.compile(r"^DAY(\d+)$", re.IGNORECASE)
_META = ("need_audio", "need_name", "last_time", "trigger", "keywords", "reason", "query_time", "target_time")


def clock_seconds(hhmmssff: Any, frame_rate: float = FRAME_RATE) -> float:
  """Seconds since 00:00 of an EgoLife HHMMSSFF time ("11210217" -> 11:21:02 + 17/20 s)."""
  if not isinstance(hhmmssff, str) or not re.fullmatch(r"\d{8}", hhmmssff):
    raise RowError(f"time {hhmmssff!r} is not HHMMSSFF (8 digits)")
  h, m, s, f = (int(hhmmssff[i:i + 2]) for i in range(0, 8, 2))
  if h > 23 or m > 59 or s > 59:
    raise RowError(f"time {hhmmssff!r} is not a time of day")
  if f >= frame_rate:
    raise RowError(f"time {hhmmssff!r}: frame {f:02d} >= frame_rate {frame_rate:g}")
  return h * 3600 + m * 60 + s + f / frame_rate


@dataclasses.dataclass(frozen=True)
class Day:
  """One day's files: wall clocks (seconds since 00:00, sorted), paths, and their stream-time starts."""
  day: int
  clocks: tuple[float, ...]
  paths: tuple[str, ...]
  starts: tuple[float, ...]
  close_gaps: bool

  def stream_time(self, clock: float) -> float:
    """A wall clock of this day in stream time; RowError before the first file."""
    k = bisect.bisect_right(self.clocks, clock) - 1
    if k < 0:
      raise RowError(f"time {clock:.2f} s is before DAY{self.day}'s first video ({self.clocks[0]:.2f} s)")
    offset = clock - self.clocks[k]
    return self.starts[k] + (min(offset, SEGMENT_SECONDS) if self.close_gaps else offset)


def load_egolife(annotation_path: str | os.PathLike, video_dir: str | os.PathLike, *,
                 subtitles_dir: str | os.PathLike | None = None, tracks_dir: str | os.PathLike | None = None,
                 person: str | None = None, close_gaps: bool = False, frame_rate: float = FRAME_RATE) -> Benchmark:
  """Day streams of `person` (e.g. "A1_JAKE"; None: the only person whose files are in video_dir)
  with the EgoLifeQA questions of `annotation_path` (JSON or JSONL list of rows)."""
  video_dir, name = check_video_dir(video_dir), os.path.basename(os.fspath(annotation_path))
  rows = read_annotations(annotation_path)
  if not isinstance(rows, list):
    raise AnnotationError(f"{name}: expected a list of EgoLifeQA rows, got {type(rows).__name__}")
  errors: list[LoadError] = []
  person, files = _scan(video_dir, person, frame_rate, errors)
  days = {d: _day(d, entries, close_gaps) for d, entries in sorted(files.items())}
  questions: dict[int, list[Question]] = {d: [] for d in days}
  located = ((f"{name} row {i}" + (f" (ID {row.get('ID')!r})" if isinstance(row, dict) and "ID" in row else ""), row)
             for i, row in enumerate(rows))
  for _, day, q in parse_rows(located, lambda row: _question(row, days, person, frame_rate), errors, "ID"):
    questions[day].append(q)
  streams = [_stream(person, days[d], qs, subtitles_dir, tracks_dir) for d, qs in questions.items()]
  return Benchmark("egolife", streams, errors)


def _scan(video_dir: str, person: str | None, frame_rate: float, errors: list[LoadError]
          ) -> tuple[str, dict[int, list[tuple[float, str]]]]:
  """(person, {day: [(wall clock, path)]}) from the EgoLife-named mp4s anywhere under video_dir."""
  found: dict[str, dict[int, list[tuple[float, str]]]] = {}
  for root, dirs, names in os.walk(video_dir):
    dirs.sort()
    for fname in sorted(names):
      m = _FILE.match(fname)
      if not m or (person is not None and m.group(2) != person):
        continue
      path = os.path.join(root, fname)
      try:
        clock = clock_seconds(m.group(3), frame_rate)
      except RowError as e:
        errors.append(LoadError(path, f"bad file name: {e}"))
        continue
      found.setdefault(m.group(2), {}).setdefault(int(m.group(1)), []).append((clock, path))
  if person is None:
    if len(found) > 1:
      raise ValueError(f"{video_dir} holds files of {sorted(found)}; pass person=")
    person = next(iter(found), "")
  files = found.get(person, {})
  for day, entries in files.items():
    entries.sort()
    for (c0, p0), (c1, p1) in zip(entries, entries[1:]):
      if c0 == c1:
        errors.append(LoadError(p1, f"same start time as {p0}; skipped"))
    files[day] = [e for k, e in enumerate(entries) if k == 0 or e[0] != entries[k - 1][0]]
  return person, files


def _day(day: int, entries: list[tuple[float, str]], close_gaps: bool) -> Day:
  clocks = [c for c, _ in entries]
  if close_gaps:
    starts = [0.0]
    for c0, c1 in zip(clocks, clocks[1:]):
      starts.append(starts[-1] + min(c1 - c0, SEGMENT_SECONDS))
  else:
    starts = [c - clocks[0] for c in clocks]
  return Day(day, tuple(clocks), tuple(p for _, p in entries), tuple(starts), close_gaps)


def _when(value: Any, field: str, frame_rate: float) -> tuple[int, float]:
  """(day, seconds since 00:00) of a {date: "DAYn", time: "HHMMSSFF"} field."""
  if not isinstance(value, dict):
    raise RowError(f"field {field!r} must be an object {{date, time}}, got {type(value).__name__}")
  date = need(value, "date")
  m = _DAY.match(date.strip())
  if not m:
    raise RowError(f"{field}.date {date!r} is not DAYn")
  try:
    return int(m.group(1)), clock_seconds(value.get("time"), frame_rate)
  except RowError as e:
    raise RowError(f"{field}.{e}") from None


def _question(row: Any, days: dict[int, Day], person: str, frame_rate: float) -> tuple[int, Question]:
  if not isinstance(row, dict):
    raise RowError(f"expected an object, got {type(row).__name__}")
  qid = str(need(row, "ID", (str, int)))
  day, clock = _when(row.get("query_time"), "query_time", frame_rate)
  if day not in days:
    raise RowError(f"query_time is on DAY{day}, which has no {person or 'EgoLife'} videos")
  options = tuple(need(row, f"choice_{c}").strip() for c in "abcd")
  meta = {k: row[k] for k in _META if k in row}
  meta.update(query_day=day, query_clock=clock, target=_targets(row.get("target_time"), days, frame_rate))
  q = Question(qid, need(row, "type"), need(row, "question"), options, answer_letter(row.get("answer")),
               days[day].stream_time(clock), meta)
  return day, q


def _targets(value: Any, days: dict[int, Day], frame_rate: float) -> list[dict[str, Any]]:
  """target_time (absent, one {date, time} or a list of them) as [{day, clock, stream_time}];
  stream_time is in that day's stream, None when the day has no videos or the time precedes them."""
  if value is None:
    return []
  out = []
  for item in value if isinstance(value, list) else [value]:
    day, clock = _when(item, "target_time", frame_rate)
    try:
      at = days[day].stream_time(clock) if day in days else None
    except RowError:
      at = None
    out.append({"day": day, "clock": clock, "stream_time": at})
  return out


def _stream(person: str, day: Day, questions: list[Question], subtitles_dir, tracks_dir) -> Stream:
  sid = f"{person}_DAY{day.day}"
  questions = sorted(questions, key=lambda q: q.ask_after)  # stable: file order among equal times
  meta = {"person": person, "day": day.day, "origin": day.clocks[0], "close_gaps": day.close_gaps,
          "clocks": day.clocks}
  return Stream(sid, tuple(Segment(p, s) for p, s in zip(day.paths, day.starts)), tuple(questions),
                subtitles=optional_file(subtitles_dir, sid + ".srt"), tracks=optional_file(tracks_dir, sid + ".json"),
                meta=meta)
