"""Drawing: red <face_k> boxes and bottom subtitles burned into a window's sampled frames, at the official
sizes scaled to the frame height (render_window); load_overlays reads both files."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping, Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from taskmem_jax.benchmarks.overlay.subtitles import OverlayError, Subtitle, parse_srt, subtitle_layout
from taskmem_jax.benchmarks.overlay.tracks import (FaceBox, FaceTracks, _track_frame, frame_times, load_tracks,
                                                   window_identities)
from taskmem_jax.memory.identities import window_ids
from taskmem_jax.processing.video import VideoClip

REFERENCE_HEIGHT = 720  # frame height at which the official pixel sizes below are used as they are
LABEL_FONT = 16
SUBTITLE_FONT = 24
PADDING = 5
SIDE_MARGIN = 50
BOX_THICKNESS = 2
MIN_FONT = 10  # px; the scaled font sizes never go below it
RED = (255, 0, 0)
SUBTITLE_BACKGROUND = (255, 255, 255, 128)


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
