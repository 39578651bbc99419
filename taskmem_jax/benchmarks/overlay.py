"""Burning face boxes and speaker-labelled subtitles into a window's frames (taskmem-spec.md §1.2).

The policy never gets face tracks or a transcript as data: the official pipeline draws them onto the
video (TM tools/video_process.py `draw_boxes`), and the policy reads the tags `<face_k>` off the frames
and writes them into its memory. This module does the same drawing on a VideoClip's sampled frames, so
benchmarks with subtitles and face tracks can be fed to the policy the way it was trained.

What is drawn, as in the official renderer (sizes given for a 720-px-high frame and scaled by H / 720, so
that a low-resolution frame keeps the same layout; box lines stay 2 px and fonts stay >= 10 px):
- per face box: a 2-px red rectangle inside [x0, x1) x [y0, y1), and above its top-left corner a red tag
  with the white text `<face_k>` (font 16, padding 5), k = the window-local id of the box's identity
  (memory/identities.py). The tag is moved inside the frame when the box touches the top or right edge.
- per subtitle on screen: bottom-centred black text (font 24, padding 5, wrapped to the width minus 50 px
  each side) on white at alpha 128, reading `<face_k>: text` when the speaker is known, the plain text
  otherwise. Bottom margin 80 px; a subtitle that starts before the previous one ends alternates to
  50 px and back, and subtitle i ends no later than subtitle i+2 starts, so at most two are on screen.
Fonts: PIL's built-in scalable font (ImageFont.load_default(size)), so no font files are needed.

Times. A sampled frame's time is frame_indices / source_fps + time_offset, in stream seconds;
time_offset is where the clip's source file starts in the stream (0 for single-file streams).
A subtitle is on frames with start <= t < end. A frame at time t shows the boxes of track frame
floor(t * tracks.fps + 0.5), the official rule, so tracks sampled at 10 fps cover every source frame.

Subtitle files (parse_srt), stream seconds:
- SRT: blocks `index / HH:MM:SS,mmm --> HH:MM:SS,mmm / text lines`, separated by blank lines (the index
  line may be missing; `.` may replace `,`). Text lines are joined by spaces; <i>, <b>, <u>, <font> are
  dropped. A speaker is given by a text prefix `[face_N]: ` or `<face_N>: `.
- JSON: a list of objects, or JSONL (one object per line), each {"start", "end", "text", "speaker"}
  ("start_time", "end_time", "asr" are accepted too: the official ASR output). speaker is optional: an
  int, a tag such as "[face_3]", or null / "unknown"; without it a text prefix is read as in SRT.
Either way the number is the stream-global identity N (the file covers the whole stream, so there is
no window for a local number to belong to); render_window shows it as that window's `<face_k>`.

Face track files (load_tracks), JSON:
    {"fps": 10.0,                 # rate of the frame indices below (any rate; need not be the video's)
     "size": [1280, 720],         # optional: [width, height] the boxes are measured in
     "tracks": [{"identity": 3, "boxes": [[frame_index, x0, y0, x1, y1], ...]}, ...]}
  identity: the stream-global id N (an int, or a tag like "[face_3]"); several tracks may share one.
  frame_index: stream time * fps (so time = frame_index / fps); boxes: pixels, x0 < x1, y0 < y1.
  Per-frame detections are accepted instead of "tracks":
    "detections": [[frame_index, identity, x0, y0, x1, y1], ...]
  which is what any tracker's output (one row per detected face) converts to in one line.
  Without "size" the boxes are taken to be in the rendered frames' pixels; with it they are rescaled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from taskmem_jax.memory.identities import parse_identity, window_ids
from taskmem_jax.processing.video import VideoClip

REFERENCE_HEIGHT = 720  # frame height at which the official pixel sizes below are used as they are
LABEL_FONT = 16
SUBTITLE_FONT = 24
PADDING = 5
SIDE_MARGIN = 50
BOTTOM_MARGINS = (80, 50)
BOX_THICKNESS = 2
MIN_FONT = 10  # px; the scaled font sizes never go below it
RED = (255, 0, 0)
SUBTITLE_BACKGROUND = (255, 255, 255, 128)


class OverlayError(ValueError):
  """A subtitle or face-track file, or a render request, that cannot be used; the message says where."""


@dataclasses.dataclass(frozen=True)
class Subtitle:
  """One subtitle: [start, end) in stream seconds, its text, and the speaker's global id (None: unknown)."""
  start: float
  end: float
  text: str
  speaker: int | None = None


class FaceBox(NamedTuple):
  """One face on one track frame: its global identity and box (pixels, x0 < x1, y0 < y1)."""
  identity: int
  x0: float
  y0: float
  x1: float
  y1: float


@dataclasses.dataclass
class FaceTracks:
  """Face boxes by track frame. fps: the rate of the frame indices (time = index / fps).
  frames: {frame index: boxes on it}. size: (width, height) the boxes are measured in, or None for the
  rendered frames' own pixels."""
  fps: float
  frames: dict[int, list[FaceBox]]
  size: tuple[int, int] | None = None


# ---------------------------------------------------------------------------------------------- subtitles

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


# ---------------------------------------------------------------------------------------------- face tracks


def _box(values: Any, where: str) -> tuple[float, float, float, float]:
  try:
    x0, y0, x1, y1 = (float(v) for v in values)
  except (TypeError, ValueError):
    raise OverlayError(f"{where}: expected 4 numbers x0, y0, x1, y1, got {values!r}") from None
  if not all(map(math.isfinite, (x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
    raise OverlayError(f"{where}: box {values!r} needs finite x0 < x1 and y0 < y1")
  return x0, y0, x1, y1


def _frame_index(value: Any, where: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
    raise OverlayError(f"{where}: frame index {value!r} is not a non-negative integer")
  return int(value)


def _identity(value: Any, where: str) -> int:
  try:
    identity = parse_identity(value)
  except ValueError as e:
    raise OverlayError(f"{where}: {e}") from None
  if identity is None:
    raise OverlayError(f"{where}: a face track needs an identity, got {value!r}")
  return identity


def load_tracks(source: str | os.PathLike | Mapping[str, Any]) -> FaceTracks:
  """FaceTracks from a track JSON file, its text, or the parsed dict (format: module docstring).

  Malformed input raises OverlayError naming the track and box (or detection row).
  """
  if isinstance(source, Mapping):
    data = source
  else:
    text = _read_text(source, "face track")
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise OverlayError(f"face track JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
  if not isinstance(data, Mapping):
    raise OverlayError(f"face tracks: expected an object with 'fps' and 'tracks', got {type(data).__name__}")
  fps = data.get("fps")
  if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
    raise OverlayError(f"face tracks: 'fps' must be a positive number, got {fps!r}")
  size = data.get("size")
  if size is not None:
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
      raise OverlayError(f"face tracks: 'size' must be [width, height] in pixels, got {size!r}")
    size = (int(size[0]), int(size[1]))
  if ("tracks" in data) == ("detections" in data):
    raise OverlayError("face tracks: give exactly one of 'tracks' and 'detections'")
  frames: dict[int, list[FaceBox]] = {}
  if "tracks" in data:
    if not isinstance(data["tracks"], list):
      raise OverlayError("face tracks: 'tracks' must be a list")
    for t, track in enumerate(data["tracks"]):
      where = f"face track {t}"
      if not isinstance(track, Mapping) or "identity" not in track or "boxes" not in track:
        raise OverlayError(f"{where}: expected {{'identity': N, 'boxes': [[frame, x0, y0, x1, y1], ...]}}")
      identity = _identity(track["identity"], where)
      for b, row in enumerate(track["boxes"]):
        if not isinstance(row, (list, tuple)) or len(row) != 5:
          raise OverlayError(f"{where} box {b}: expected [frame_index, x0, y0, x1, y1], got {row!r}")
        frame = _frame_index(row[0], f"{where} box {b}")
        frames.setdefault(frame, []).append(FaceBox(identity, *_box(row[1:], f"{where} box {b}")))
  else:
    if not isinstance(data["detections"], list):
      raise OverlayError("face tracks: 'detections' must be a list")
    for r, row in enumerate(data["detections"]):
      where = f"face detection {r}"
      if not isinstance(row, (list, tuple)) or len(row) != 6:
        raise OverlayError(f"{where}: expected [frame_index, identity, x0, y0, x1, y1], got {row!r}")
      frame = _frame_index(row[0], where)
      frames.setdefault(frame, []).append(FaceBox(_identity(row[1], where), *_box(row[2:], where)))
  return FaceTracks(float(fps), frames, size)


# ---------------------------------------------------------------------------------------------- rendering


def frame_times(clip: VideoClip, time_offset: float = 0.0) -> np.ndarray:
  """float64 [T]: stream seconds of the clip's sampled frames."""
  return np.asarray(clip.frame_indices, np.float64) / clip.source_fps + time_offset


def _track_frame(time: float, fps: float) -> int:
  # The official rule int(t * fps + 1/2); the epsilon keeps t = k / fps from landing on k - 1 by rounding.
  return math.floor(time * fps + 0.5 + 1e-9)


def window_identities(clip: VideoClip, *, subtitles: Sequence[Subtitle] | None = None,
                      tracks: FaceTracks | None = None, time_offset: float = 0.0
                      ) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
  """(visible, speaking): (stream time, global id) events of the clip's window, for window_ids.

  visible: every track box whose track frame is shown on some time of [start, end) (track frames
  within half a track period of the window count, by the rounding rule); speaking: every subtitle with
  a speaker overlapping [start, end), timed at max(its start, the window start).
  """
  start, end = clip.start + time_offset, clip.end + time_offset
  visible = []
  if tracks is not None:
    # Track frame k is shown for times [(k - 1/2) / fps, (k + 1/2) / fps); [start, end) meets first..last.
    first, last = _track_frame(start, tracks.fps), math.ceil(end * tracks.fps + 0.5 - 1e-9) - 1
    for frame in sorted(tracks.frames):
      if first <= frame <= last:
        visible += [(max(frame / tracks.fps, start), box.identity) for box in tracks.frames[frame]]
  speaking = [(max(s.start, start), s.speaker) for s in subtitles or ()
              if s.speaker is not None and s.start < end and s.end > start]
  return visible, speaking


def _font(size: float) -> PIL.ImageFont.FreeTypeFont:
  # Below ~10 px the built-in font's digits blur together, and a tag the policy cannot read is useless.
  return PIL.ImageFont.load_default(size=max(MIN_FONT, round(size)))


def _wrap(draw: PIL.ImageDraw.ImageDraw, text: str, font, max_width: float) -> list[str]:
  """Greedy word wrap to max_width pixels; a word wider than the line gets a line of its own."""
  lines, line = [], ""
  for word in text.split():
    candidate = f"{line} {word}" if line else word
    if line and draw.textlength(candidate, font=font) > max_width:
      lines.append(line)
      line = word
    else:
      line = candidate
  return lines + [line] if line else lines


def _text_block(draw, lines: list[str], font, spacing: int) -> tuple[int, int, int]:
  """(width, height, line height) of left-aligned lines in font."""
  ascent, descent = font.getmetrics()
  line_height = ascent + descent + spacing
  width = max(math.ceil(draw.textlength(line, font=font)) for line in lines)
  return width, line_height * len(lines) - spacing, line_height


def _draw_box(frame: np.ndarray, box: FaceBox, scale_xy: tuple[float, float]) -> tuple[int, int, int, int] | None:
  """Draws the 2-px red border inside [x0, x1) x [y0, y1) in place, as the official slices; returns the
  integer box clipped to the frame, or None when it lies outside."""
  h, w = frame.shape[:2]
  sx, sy = scale_xy
  x0, x1 = (int(round(v * sx)) for v in (box.x0, box.x1))
  y0, y1 = (int(round(v * sy)) for v in (box.y0, box.y1))
  x0, x1, y0, y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
  if x1 <= x0 or y1 <= y0:
    return None
  t = BOX_THICKNESS
  frame[y0:y0 + t, x0:x1] = RED
  frame[max(y1 - t, y0):y1, x0:x1] = RED
  frame[y0:y1, x0:x0 + t] = RED
  frame[y0:y1, max(x1 - t, x0):x1] = RED
  return x0, y0, x1, y1


def _draw_label(image: PIL.Image.Image, text: str, corner: tuple[int, int], scale: float) -> None:
  """A red tag with white text whose bottom-left corner is the box's top-left corner, kept in the frame."""
  draw = PIL.ImageDraw.Draw(image)
  font, pad = _font(LABEL_FONT * scale), max(1, round(PADDING * scale))
  width, height, _ = _text_block(draw, [text], font, 0)
  tag_w, tag_h = width + 2 * pad, height + 2 * pad
  x, y = corner
  x = min(x, image.width - tag_w)
  y = y - tag_h if y - tag_h >= 0 else y  # no room above the box: put the tag just inside its top edge
  x = max(x, 0)
  draw.rectangle([x, y, x + tag_w - 1, y + tag_h - 1], fill=RED)
  draw.text((x + pad, y + pad), text, font=font, fill=(255, 255, 255))


def _draw_subtitle(overlay: PIL.Image.Image, text: str, bottom_margin: int, scale: float) -> None:
  """Bottom-centred black text on semi-transparent white, drawn on an RGBA overlay."""
  draw = PIL.ImageDraw.Draw(overlay)
  font, pad = _font(SUBTITLE_FONT * scale), max(1, round(PADDING * scale))
  lines = _wrap(draw, text, font, overlay.width - 2 * SIDE_MARGIN * scale)
  if not lines:
    return
  width, height, line_height = _text_block(draw, lines, font, pad)
  x = (overlay.width - width - 2 * pad) // 2
  y = overlay.height - round(bottom_margin * scale) - height - 2 * pad
  draw.rectangle([x, y, x + width + 2 * pad - 1, y + height + 2 * pad - 1], fill=SUBTITLE_BACKGROUND)
  for k, line in enumerate(lines):
    draw.text((x + pad, y + pad + k * line_height), line, font=font, fill=(0, 0, 0, 255))


def _local(identity: int, local_ids: Mapping[int, int], what: str) -> str:
  if identity not in local_ids:
    raise OverlayError(f"{what} has global identity {identity}, which local_ids {dict(local_ids)} does not number; "
                       f"build local_ids with memory.identities.window_ids over window_identities(...)")
  return f"<face_{local_ids[identity]}>"


def render_window(clip: VideoClip, *, subtitles: Sequence[Subtitle] | None = None, tracks: FaceTracks | None = None,
                  local_ids: Mapping[int, int] | None = None, time_offset: float = 0.0) -> VideoClip:
  """The clip with face boxes, `<face_k>` tags and subtitles burned into its frames (module docstring).

  clip.frames: uint8 [T, H, W, 3]; the result has the same shape and the other fields unchanged; frames
  with nothing on screen keep their values exactly (so do all frames without subtitles and tracks).
  local_ids: {global id: local k}; None numbers the window's own identities with window_ids (no previous
  memories). A box or speaker whose identity local_ids lacks raises OverlayError.
  time_offset: stream seconds at which the clip's source file starts.
  """
  frames = np.asarray(clip.frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise OverlayError(f"render_window needs uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
  out = frames.copy()
  if not subtitles and not tracks:
    return dataclasses.replace(clip, frames=out)
  if local_ids is None:
    local_ids = window_ids(*window_identities(clip, subtitles=subtitles, tracks=tracks, time_offset=time_offset))
  height, width = frames.shape[1:3]
  scale = height / REFERENCE_HEIGHT
  box_scale = (1.0, 1.0) if tracks is None or tracks.size is None else (width / tracks.size[0], height / tracks.size[1])
  layout = subtitle_layout(subtitles or ())
  for i, time in enumerate(frame_times(clip, time_offset)):
    boxes = tracks.frames.get(_track_frame(time, tracks.fps), []) if tracks else []
    shown = [(s, margin) for s, margin in layout if s.start <= time < s.end]
    if not boxes and not shown:
      continue
    frame = out[i]
    corners = []
    for box in boxes:
      drawn = _draw_box(frame, box, box_scale)
      if drawn is not None:
        corners.append((_local(box.identity, local_ids, f"face box at {time:.3f} s"), drawn[:2]))
    image = PIL.Image.fromarray(frame)
    for label, corner in corners:
      _draw_label(image, label, corner, scale)
    if shown:
      overlay = PIL.Image.new("RGBA", image.size, (0, 0, 0, 0))
      for s, margin in shown:
        text = s.text if s.speaker is None else f"{_local(s.speaker, local_ids, 'subtitle speaker')}: {s.text}"
        _draw_subtitle(overlay, text, margin, scale)
      image = PIL.Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    out[i] = np.asarray(image)
  return dataclasses.replace(clip, frames=out)


def load_overlays(subtitles: str | os.PathLike | None = None, tracks: str | os.PathLike | None = None
                  ) -> tuple[list[Subtitle] | None, FaceTracks | None]:
  """(parse_srt(subtitles), load_tracks(tracks)) for the paths given, None for those not given."""
  return (None if subtitles is None else parse_srt(subtitles)), (None if tracks is None else load_tracks(tracks))


__all__ = [
    "FaceBox", "FaceTracks", "OverlayError", "Subtitle", "frame_times", "load_overlays", "load_tracks", "parse_srt",
    "render_window", "split_speaker", "subtitle_layout", "window_identities",
]
