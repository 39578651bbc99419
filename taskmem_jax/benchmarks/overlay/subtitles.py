"""Subtitle files (SRT, speaker-labelled JSON / JSONL) -> Subtitle rows in stream seconds, and where each is
shown (the official alternating bottom margins). The formats are described in overlay/__init__.py."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Sequence

from taskmem_jax.memory.identities import parse_identity

BOTTOM_MARGINS = (80, 50)  # px at 720-px height: a subtitle that overlaps the previous one alternates


class OverlayError(ValueError):
  """A subtitle or face-track file, or a render request, that cannot be used; the message says where."""



@dataclasses.dataclass(frozen=True)
class Subtitle:
  """One subtitle: [start, end) in stream seconds, its text, and the speaker's global id (None: unknown)."""
  start: float
  end: float
  text: str
  speaker: int | None = None



_SPEAKER_PREFIX = re.compile(r"\s*(?:<\s*face[\s_-]*(\d+)\s*>|\[\s*face[\s_-]*(\d+)\s*\])\s*:\s*(.*)",
                             re.IGNORECASE | re.DOTALL)
_SRT_TIME = r"(\d+):([0-5]?\d):([0-5]?\d)(?:[,.](\d{1,3}))?"
_SRT_TIMING = re.compile(rf"\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(?:\s+.*)?")
_FORMAT_TAG = re.compile(r"</?(?:i|b|u|font)\b[^>]*>", re.IGNORECASE)


def split_speaker(text: str) -> tuple[int | None, str]:
  """`[face_3]: hello` or `<face_3>: hello` -> (3, "hello"); text without such a prefix -> (None, text)."""
  m = _SPEAKER_PREFIX.fullmatch(text)
  if not m:
    return None, text.strip()
  return int(m.group(1) or m.group(2)), m.group(3).strip()


def _seconds(groups: Sequence[str | None]) -> float:
  h, m, s, ms = groups
  return int(h) * 3600 + int(m) * 60 + int(s) + (int(ms.ljust(3, "0")) / 1000 if ms else 0.0)


def _check_times(start: float, end: float, where: str) -> None:
  if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
    raise OverlayError(f"{where}: start={start} end={end}: need finite 0 <= start <= end")


def _parse_srt_text(text: str) -> list[Subtitle]:
  subtitles = []
  lines = text.splitlines()
  i, block = 0, 0
  while i < len(lines):
    if not lines[i].strip():
      i += 1
      continue
    block += 1
    start_line = i
    chunk = []
    while i < len(lines) and lines[i].strip():
      chunk.append(lines[i])
      i += 1
    where = f"SRT block {block} (line {start_line + 1})"
    if not _SRT_TIMING.fullmatch(chunk[0]):  # first line is the index, unless the file leaves it out
      if not chunk[0].strip().isdigit():
        raise OverlayError(f"{where}: expected a block number or a timing line, got {chunk[0].strip()!r}")
      chunk = chunk[1:]
      where = f"SRT block {block} (line {start_line + 2})"
    if not chunk:
      raise OverlayError(f"{where}: block has a number but no timing line")
    m = _SRT_TIMING.fullmatch(chunk[0])
    if not m:
      raise OverlayError(f"{where}: expected 'HH:MM:SS,mmm --> HH:MM:SS,mmm', got {chunk[0].strip()!r}")
    start, end = _seconds(m.groups()[:4]), _seconds(m.groups()[4:])
    _check_times(start, end, where)
    body = " ".join(_FORMAT_TAG.sub("", line).strip() for line in chunk[1:]).strip()
    if not body:
      raise OverlayError(f"{where}: subtitle has no text")
    speaker, body = split_speaker(body)
    subtitles.append(Subtitle(start, end, body, speaker))
  return subtitles


def _subtitle_from_item(item: Any, where: str) -> Subtitle:
  if not isinstance(item, dict):
    raise OverlayError(f"{where}: expected an object {{start, end, text, speaker}}, got {type(item).__name__}")

  def field(*names):
    for name in names:
      if name in item:
        return item[name]
    raise OverlayError(f"{where}: missing {' / '.join(repr(n) for n in names)}")

  try:
    start, end = float(field("start", "start_time")), float(field("end", "end_time"))
  except (TypeError, ValueError) as e:
    raise OverlayError(f"{where}: start / end must be numbers of seconds ({e})") from None
  _check_times(start, end, where)
  text = field("text", "asr")
  if not isinstance(text, str):
    raise OverlayError(f"{where}: text must be a string, got {type(text).__name__}")
  if "speaker" in item:
    try:
      speaker = parse_identity(item["speaker"])
    except ValueError as e:
      raise OverlayError(f"{where}: {e}") from None
    prefixed, rest = split_speaker(text)
    # A prefix naming the same speaker again is dropped, so the frame does not read `<face_1>: <face_1>: ...`.
    text = rest if prefixed is not None and prefixed == speaker else text.strip()
  else:
    speaker, text = split_speaker(text)
  return Subtitle(start, end, text, speaker)


def _parse_json_text(text: str) -> list[Subtitle]:
  stripped = text.strip()
  if stripped.startswith("["):
    try:
      items = json.loads(stripped)
    except json.JSONDecodeError as e:
      raise OverlayError(f"subtitle JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    return [_subtitle_from_item(item, f"subtitle item {k} (0-based)") for k, item in enumerate(items)]
  subtitles = []
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    try:
      item = json.loads(line)
    except json.JSONDecodeError as e:
      raise OverlayError(f"subtitle JSONL line {lineno}: {e.msg}") from None
    subtitles.append(_subtitle_from_item(item, f"subtitle JSONL line {lineno}"))
  return subtitles


def _read_text(text_or_path: str | os.PathLike, what: str) -> str:
  """A path (os.PathLike, or a one-line string that is not JSON) -> its text; anything else is the text."""
  if isinstance(text_or_path, os.PathLike) or (
      "\n" not in text_or_path and not text_or_path.lstrip().startswith(("[", "{"))):
    path = os.fspath(text_or_path)
    if not os.path.isfile(path):
      raise OverlayError(f"{what} file not found: {path}")
    with open(path, encoding="utf-8-sig") as f:
      return f.read()
  return text_or_path


def parse_srt(text_or_path: str | os.PathLike) -> list[Subtitle]:
  """Subtitles of an SRT or JSON / JSONL file (or its text), sorted by start (format: module docstring).

  Malformed input raises OverlayError naming the SRT block and line, or the JSON item / JSONL line.
  """
  text = _read_text(text_or_path, "subtitle").lstrip("\ufeff")
  is_json = text.lstrip().startswith(("[", "{"))
  subtitles = _parse_json_text(text) if is_json else _parse_srt_text(text)
  return sorted(subtitles, key=lambda s: (s.start, s.end))


def subtitle_layout(subtitles: Sequence[Subtitle]) -> list[tuple[Subtitle, int]]:
  """(subtitle as shown, bottom margin at the reference height) per subtitle, sorted by start.

  The official rules: subtitle i ends no later than subtitle i+2 starts (at most two on screen), and a
  subtitle starting before the previous one ends alternates between the 80 and 50 px margins.
  """
  shown = sorted(subtitles, key=lambda s: (s.start, s.end))
  ends = [s.end for s in shown]
  for i in range(len(shown) - 2):
    ends[i] = min(ends[i], shown[i + 2].start)
  layout = []
  margin, previous_end = BOTTOM_MARGINS[0], -math.inf
  for s, end in zip(shown, ends):
    if s.start < previous_end:
      margin = BOTTOM_MARGINS[1] if margin == BOTTOM_MARGINS[0] else BOTTOM_MARGINS[0]
    else:
      margin = BOTTOM_MARGINS[0]
    previous_end = end
    layout.append((dataclasses.replace(s, end=end), margin))
  return layout
