"""Frames -> Qwen3-VL pixel_values rows, in the layout transformers' image/video processors produce.

Resizing and frame sampling live elsewhere; this is the fixed-size tail of both pipelines:
rescale + normalise, pad the frame count to the temporal patch, and cut 3-D patches in merge-block
order (block_row, block_col, in_row, in_col), each flattened as (C, T, P, P).
"""

from __future__ import annotations

import numpy as np

from taskmem_jax.models.qwen3_vl.config import VisionConfig

MEAN = STD = 0.5  # Qwen3-VL's image and video processors


def normalize(frames: np.ndarray) -> np.ndarray:
  """uint8 [..., H, W, C] -> float32 (x / 255 - 0.5) / 0.5."""
  return ((np.asarray(frames, np.float32) / 255.0) - MEAN) / STD


def patchify(frames: np.ndarray, vision: VisionConfig) -> tuple[np.ndarray, np.ndarray]:
  """frames: [T, H, W, C] normalised float32 (an image is T=1).

  H and W must be multiples of patch_size * spatial_merge_size. The frame count is padded to a
  multiple of temporal_patch_size by repeating the last frame (an image becomes two identical copies).
  Returns (pixel_values [t*h*w, C*T*P*P] float32, grid_thw [3] = (t, h, w) in patches).
  """
  frames = np.asarray(frames, np.float32)
  if frames.ndim != 4 or frames.shape[-1] != vision.in_channels:
    raise ValueError(f"frames: expected shape [T, H, W, {vision.in_channels}], got {frames.shape}")
  p, tp, m = vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size
  t, h, w, c = frames.shape
  if h % (p * m) or w % (p * m):
    raise ValueError(f"frames: height {h} and width {w} must be multiples of patch_size*spatial_merge_size={p * m}")
  if t % tp:
    frames = np.concatenate([frames, np.repeat(frames[-1:], tp - t % tp, axis=0)])
  gt, gh, gw = frames.shape[0] // tp, h // p, w // p
  x = frames.transpose(0, 3, 1, 2)  # [T, C, H, W]
  x = x.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
  x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # gt, block_row, block_col, in_row, in_col, C, T, P, P
  return np.ascontiguousarray(x.reshape(gt * gh * gw, c * tp * p * p)), np.array([gt, gh, gw], np.int64)
