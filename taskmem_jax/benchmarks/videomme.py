"""VideoMME as a streaming benchmark: one stream per video, its questions asked after the video ends.

Public formats (paper-notes.md §6; the annotations are academic-use only, so tests use look-alikes):
- HF `lmms-lab/Video-MME` (parquet, or its JSON / JSONL export): one row per question,
  `video_id ("001"), duration (short/medium/long), domain, sub_category, url, videoID (the YouTube id,
  which names the file <videoID>.mp4 and the subtitle <videoID>.srt), question_id ("001-1"), task_type,
  question, options ["A. ...", "B. ...", "C. ...", "D. ..."], answer ("C")`.
- GitHub `evaluation/output_test_template.json`: one row per video, `video_id, duration_category,
  video_category, video_subcategory, questions [{question_id, task_type, question, choices, answer}]`
  (3 questions per video; no videoID there, so the file is <video_id>.mp4).
- TaskMem's own `video_info_{short|medium|long}.json` (taskmem-spec.md §4): {task_type: [{videoID,
  question, options, answer}]}.
All three are accepted; the field spellings differ (options / choices, duration / duration_category,
domain / video_category, ...) and are read through the aliases below.

Each question has 4 options; their "A. " prefixes are stripped (a prefix whose letter is not the
option's position is a malformed row). The paper evaluates short + medium only (`durations=`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterable, Iterator

from taskmem_jax.benchmarks.base import (
  LETTERS, AnnotationError, Benchmark, LoadError, Question, RowError, answer_letter, check_video_dir, need, optional_file,
  parse_rows, read_annotations, single_file_stream)

DURATIONS = ("short", "medium", "long")
_ALIASES = {  # our name -> the spellings of the three layouts, first match wins
  "video": ("videoID", "video_id"),
  "duration": ("duration", "duration_category"),
  "domain": ("domain", "video_category"),
  "sub_category": ("sub_category", "video_subcategory", "video_sub_category"),
  "options": ("options", "choices"),
}
_PREFIX = re.compile(r"^\s*\(?([A-Da-d])[.):]\s*")


def load_videomme(annotation_path: str | os.PathLike, video_dir: str | os.PathLike, *,
                  subtitles_dir: str | os.PathLike | None = None, tracks_dir: str | os.PathLike | None = None,
                  durations: Iterable[str] | None = None, read_durations: bool = False,
                  video_ext: str = ".mp4") -> Benchmark:
  """Streams for the videos named in `annotation_path` (JSON, JSONL or parquet; any of the three
  layouts). durations: keep only these categories (the paper: ("short", "medium")); None keeps all.
  read_durations: probe each video so ask_after is its duration (else +inf, "after the stream").
  Subtitles <video>.srt and face tracks <video>.json are attached when present in their folders."""
  video_dir, name = check_video_dir(video_dir), os.path.basename(os.fspath(annotation_path))
  keep = _duration_filter(durations)
  errors: list[LoadError] = []
  videos: dict[str, list[tuple[str, Question]]] = {}  # insertion order = first appearance

  def numbered(row):
    video, question = _question(row)
    if not question.qid:  # TaskMem's layout has no ids: number the video's questions from 1
      question = dataclasses.replace(question, qid=f"{video}-{len(videos.get(video, ())) + 1}")
    return video, question

  def kept(question):
    if keep is None or question.meta["duration"] in keep:
      return True
    if question.meta["duration"] is None:
      raise RowError(f"no duration category to filter on (keeping {sorted(keep)})")
    return False

  for where, video, question in parse_rows(_rows(read_annotations(annotation_path), name, errors), numbered, errors,
                                           "question_id", kept):
    videos.setdefault(video, []).append((where, question))
  streams = []
  for video, rows in videos.items():
    stream = _stream(video, rows, video_dir, video_ext, subtitles_dir, tracks_dir, read_durations, errors)
    if stream is not None:
      streams.append(stream)
  return Benchmark("videomme", streams, errors)


def _duration_filter(durations: Iterable[str] | None) -> set[str] | None:
  if durations is None:
    return None
  keep = {d.lower() for d in ([durations] if isinstance(durations, str) else durations)}
  if not keep <= set(DURATIONS):
    raise ValueError(f"durations must be among {DURATIONS}, got {sorted(keep)}")
  return keep


def _rows(data: Any, name: str, errors: list[LoadError]) -> Iterator[tuple[str, dict]]:
  """(where, flat question row) for each question of any layout; a grouped row's video fields are
  copied into each of its questions."""
  if isinstance(data, dict):  # TaskMem: {task_type: [rows]}
    for task, rows in data.items():
      if not isinstance(rows, list):
        errors.append(LoadError(f"{name} [{task!r}]", f"expected a list of rows, got {type(rows).__name__}"))
        continue
      for i, row in enumerate(rows):
        where = f"{name} [{task!r}] row {i}"
        if _is_row(row, where, errors):
          yield where, {"task_type": task, **row}
    return
  if not isinstance(data, list):
    raise AnnotationError(f"{name}: expected a list of rows or a {{task_type: rows}} object, "
                          f"got {type(data).__name__}")
  for i, row in enumerate(data):
    where = f"{name} row {i}"
    if not _is_row(row, where, errors):
      continue
    if "questions" not in row:  # HF: one row per question
      yield where, row
    elif not isinstance(row["questions"], list):
      errors.append(LoadError(where, f"field 'questions' must be list, got {type(row['questions']).__name__}"))
    else:  # GitHub template: one row per video
      shared = {k: v for k, v in row.items() if k != "questions"}
      for j, q in enumerate(row["questions"]):
        if _is_row(q, f"{where} question {j}", errors):
          yield f"{where} question {j}", {**shared, **q}


def _is_row(row: Any, where: str, errors: list[LoadError]) -> bool:
  if not isinstance(row, dict):
    errors.append(LoadError(where, f"expected an object, got {type(row).__name__}"))
  return isinstance(row, dict)


def _get(row: dict, field: str) -> tuple[str, Any]:
  """(the spelling found, its value) for one of our field names; (first spelling, None) if absent."""
  for key in _ALIASES[field]:
    if row.get(key) is not None:
      return key, row[key]
  return _ALIASES[field][0], None


def _question(row: dict) -> tuple[str, Question]:
  """(video key, question with ask_after +inf for now and qid "" when the row has none)."""
  key, _ = _get(row, "video")
  video = need(row, key)
  okey, _ = _get(row, "options")
  options = _options(need(row, okey, list))
  answer = answer_letter(row.get("answer"))
  qid = need(row, "question_id") if row.get("question_id") is not None else ""
  duration = _get(row, "duration")[1]
  if duration is not None and (not isinstance(duration, str) or duration.lower() not in DURATIONS):
    raise RowError(f"duration category {duration!r} is not one of {DURATIONS}")
  meta = {"video_id": row.get("video_id"), "videoID": row.get("videoID"), "url": row.get("url"),
          "duration": duration.lower() if duration else None, "domain": _get(row, "domain")[1],
          "sub_category": _get(row, "sub_category")[1]}
  return video, Question(qid, need(row, "task_type"), need(row, "question"), options, answer, float("inf"), meta)


def _options(raw: list) -> tuple[str, ...]:
  if len(raw) != 4:
    raise RowError(f"expected 4 options, got {len(raw)}")
  out = []
  for i, text in enumerate(raw):
    if not isinstance(text, str):
      raise RowError(f"option {LETTERS[i]} must be str, got {type(text).__name__}")
    m = _PREFIX.match(text)
    if m and m.group(1).upper() != LETTERS[i]:
      raise RowError(f"option {LETTERS[i]} is labelled {m.group(1)!r}: {text!r}")
    text = text[m.end():] if m else text
    if not text.strip():
      raise RowError(f"option {LETTERS[i]} is empty")
    out.append(text.strip())
  return tuple(out)


def _stream(video: str, rows: list[tuple[str, Question]], video_dir: str, ext: str, subtitles_dir, tracks_dir,
            read_durations: bool, errors: list[LoadError]):
  path = os.path.join(video_dir, video + ext)
  where = f"{_span(w for w, _ in rows)} (video {video})"
  if not os.path.isfile(path):
    errors.append(LoadError(where, f"missing video {path}; {len(rows)} question(s) skipped"))
    return None
  questions = [q for _, q in rows]
  first = questions[0].meta
  meta = {k: first[k] for k in ("video_id", "videoID", "url", "duration", "domain", "sub_category")}
  try:
    return single_file_stream(video, path, questions, read_duration=read_durations, meta=meta,
                              subtitles=optional_file(subtitles_dir, video + ".srt"),
                              tracks=optional_file(tracks_dir, video + ".json"))
  except RowError as e:
    errors.append(LoadError(where, f"{e}; {len(rows)} question(s) skipped"))
    return None


def _span(wheres: Iterable[str]) -> str:
  """The rows of one video: "f.json row 3", "f.json row 3, row 4", or "f.json row 3 .. row 9 (5 rows)"."""
  wheres = list(wheres)
  rest = [w.split(" ", 1)[-1] for w in wheres[1:]]
  if len(wheres) <= 3:
    return ", ".join(wheres[:1] + rest)
  return f"{wheres[0]} .. {rest[-1]} ({len(wheres)} rows)"
