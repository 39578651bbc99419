"""SynthWorld streams as real mp4 files, and the same clips rendered in memory.

- write_stream: every frame of a stream -> an H.264 mp4 (processing.write_video). The file is read back
  with processing.read_video (decord), exactly as the pipeline reads real videos.
- render_clip: the VideoClip that read_video(path, start=, end=, fps=, ...) returns for that file,
  without the file: the same frame indices, source fps, window and first frame, and frames rendered
  directly from the stream's sprite codes. Training uses this path; it skips encoding and decoding.

The two differ only by codec loss. write_stream encodes with crf 0 (lossless luma), but yuv420p keeps
colour at half resolution and the decoder interpolates it back, so pixels within two of a colour edge
are off by up to ~40 levels, while pixels further from any edge are within 2 levels (RGB <-> YUV
rounding). Every cell still reads back as the same object, person or digit (tests/test_synthworld_io.py).
"""

from __future__ import annotations

import os

import numpy as np

from taskmem_jax.envs.synthworld.world import World
from taskmem_jax.processing.image import MediaError
from taskmem_jax.processing.video import FPS, MAX_FRAMES, MIN_FRAMES, VideoClip, sample_frame_indices
from taskmem_jax.processing.video_io import write_video


def write_stream(stream: World, path: str | os.PathLike, *, crf: int = 0) -> str:
  """Writes every frame of `stream` to an mp4 at the stream's fps; returns the path."""
  path = os.fspath(path)
  write_video(path, stream.render_frames(np.arange(stream.num_frames)), stream.fps, crf=crf)
  return path


def render_clip(stream: World, start: float | None = None, end: float | None = None, *, fps: float = FPS,
                min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES) -> VideoClip:
  """What read_video returns for the [start, end) window (seconds; None = the whole stream) of the
  stream's mp4, rendered directly: frames uint8 [T, 64, 64, 3] at the indices read_video samples.

  Same rule as read_video: the window's frames are those whose index / fps lies in [start, end), with
  end clamped to the duration, sampled as if they were a video of their own.
  """
  total, source_fps = stream.num_frames, stream.fps
  duration = total / source_fps
  start = 0.0 if start is None else float(start)
  end = duration if end is None else float(end)
  if not (0 <= start < duration and end > start):  # `not` so that NaN fails too
    raise MediaError(f"SynthWorld stream {stream.seed}: window start={start} end={end} is not inside the stream "
                     f"(duration {duration:.3f} s)")
  end = min(end, duration)
  first, stop = (int(i) for i in np.searchsorted(np.arange(total) / source_fps, [start, end], side="left"))
  if stop <= first:
    raise MediaError(f"SynthWorld stream {stream.seed}: window start={start} end={end} holds no frame "
                     f"(fps {source_fps:g})")
  indices = first + sample_frame_indices(stop - first, source_fps, fps=fps, min_frames=min_frames,
                                         max_frames=max_frames)
  return VideoClip(stream.render_frames(indices), indices, source_fps, start, end, first)
