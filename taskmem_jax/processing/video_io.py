"""Writing mp4 files (PyAV): synthetic clips for demos, SynthWorld streams, rendered windows."""

from __future__ import annotations

import os

import av
import numpy as np

from taskmem_jax.io import atomic_write


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, *, crf: int = 10) -> None:
  """frames: uint8 [T, H, W, 3] RGB -> an H.264 yuv420p mp4 at `fps`, written atomically.

  H and W must be even (yuv420p subsamples chroma by 2). crf: 0 is lossless luma; 10 is visually lossless.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  t, h, w, _ = frames.shape
  if t == 0 or h % 2 or w % 2:
    raise ValueError(f"frames: need at least one frame and even height and width, got {frames.shape}")

  def write(tmp):
    with av.open(tmp, "w", format="mp4") as container:
      stream = container.add_stream("libx264", rate=round(fps) if float(fps).is_integer() else fps)
      stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
      stream.options = {"crf": str(crf)}
      for frame in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
      container.mux(stream.encode())

  atomic_write(path, write)
