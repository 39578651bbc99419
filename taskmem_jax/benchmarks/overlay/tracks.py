"""Face-track files -> FaceTracks (boxes by track frame), and which identities a window shows or hears
(window_identities, for memory.identities.window_ids). The format is described in overlay/__init__.py."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from taskmem_jax.benchmarks.overlay.subtitles import OverlayError, Subtitle, _read_text
from taskmem_jax.memory.identities import parse_identity
from taskmem_jax.processing.video import VideoClip


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
