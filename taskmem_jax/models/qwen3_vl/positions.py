"""Host-side (NumPy) index arithmetic that depends on the grids: the text decoder's 3-D MRoPE
position ids (transformers' ``get_rope_index``) and the vision tower's per-patch metadata.

These depend on data-dependent shapes, so they run on the host once per input; everything they
return is a fixed-shape array that the jitted model consumes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from taskmem_jax.models.qwen3_vl.config import Qwen3VLConfig, VisionConfig

TEXT, IMAGE, VIDEO = 0, 1, 2


class InputError(ValueError):
  """Model inputs that do not fit together (placeholder counts, grids, shapes)."""


def _grids(grid_thw, name: str) -> np.ndarray:
  if grid_thw is None:
    return np.zeros((0, 3), np.int64)
  g = np.asarray(grid_thw, dtype=np.int64)
  if g.ndim != 2 or g.shape[1] != 3:
    raise InputError(f"{name}: expected shape [n, 3] (t, h, w), got {g.shape}")
  if (g <= 0).any():
    raise InputError(f"{name}: every grid entry must be positive, got {g.tolist()}")
  return g


def token_types(input_ids: np.ndarray, config: Qwen3VLConfig) -> np.ndarray:
  """[B, L] int: 0 text, 1 image placeholder, 2 video placeholder (derived from the ids)."""
  ids = np.asarray(input_ids)
  return np.where(ids == config.image_token_id, IMAGE, np.where(ids == config.video_token_id, VIDEO, TEXT))


def get_rope_index(input_ids, config: Qwen3VLConfig, attention_mask=None, image_grid_thw=None,
                   video_grid_thw=None) -> tuple[np.ndarray, np.ndarray]:
  """3-D MRoPE positions, transformers 5 semantics.

  input_ids: [B, L]; attention_mask: [B, L] (1 = real token) or None.
  Returns (position_ids [3, B, L] int32 (t, h, w), rope_deltas [B, 1] int32). Padded slots get 0;
  rope_delta = max position + 1 - number of real tokens, so a decoded token at real index n sits at
  n + rope_delta on all three axes.
  """
  ids = np.asarray(input_ids)
  if ids.ndim != 2:
    raise InputError(f"input_ids: expected shape [B, L], got {ids.shape}")
  b, l = ids.shape
  mask = np.ones((b, l), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
  if mask.shape != ids.shape:
    raise InputError(f"attention_mask: shape {mask.shape} does not match input_ids {ids.shape}")
  merge = config.vision.spatial_merge_size
  images = _grids(image_grid_thw, "image_grid_thw")
  videos = _grids(video_grid_thw, "video_grid_thw")
  # Each video frame group is its own run (timestamps separate them): (t, h, w) -> t x (1, h, w).
  videos = np.repeat(videos, videos[:, 0], axis=0)
  videos[:, 0] = 1
  queues = {IMAGE: list(images), VIDEO: list(videos)}
  cursor = {IMAGE: 0, VIDEO: 0}
  types = token_types(ids, config)

  position_ids = np.zeros((3, b, l), np.int64)
  deltas = np.zeros((b, 1), np.int64)
  for row in range(b):
    row_types = types[row][mask[row]]
    n = len(row_types)
    pos = np.zeros((3, n), np.int64)
    cur = 0
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(row_types)) + 1, [n]]) if n else np.zeros(1, int)
    for start, end in zip(bounds[:-1], bounds[1:]):
      kind = row_types[start]
      run = end - start
      if kind == TEXT:
        pos[:, start:end] = cur + np.arange(run)
        cur += run
      else:
        name = "image" if kind == IMAGE else "video frame group"
        if cursor[kind] >= len(queues[kind]):
          raise InputError(f"row {row}: more {name} placeholder runs than grids were given "
                           f"({len(queues[kind])})")
        t, h, w = queues[kind][cursor[kind]]
        cursor[kind] += 1
        gh, gw = h // merge, w // merge
        if run != t * gh * gw:
          raise InputError(f"row {row}: a {name} run has {run} placeholder tokens but its grid "
                           f"{(int(t), int(h), int(w))} needs {t * gh * gw}")
        r, c = np.divmod(np.arange(run) % (gh * gw), gw)
        pos[0, start:end] = cur + np.arange(run) // (gh * gw)
        pos[1, start:end] = cur + r
        pos[2, start:end] = cur + c
        cur += max(gh, gw)
    position_ids[:, row, mask[row]] = pos
    deltas[row, 0] = (pos.max() + 1 - n) if n else 0
  for kind, name in ((IMAGE, "image_grid_thw"), (VIDEO, "video_grid_thw")):
    if cursor[kind] != len(queues[kind]):
      raise InputError(f"{name}: {len(queues[kind])} grids given (video: one per frame group) but only "
                       f"{cursor[kind]} placeholder runs found in input_ids")
  return position_ids.astype(np.int32), deltas.astype(np.int32)


class VisionMetadata(NamedTuple):
  """Per-patch arrays for the vision tower, all of leading size N = sum(t*h*w).

  pos_index: [N, 4] int32 taps into the learned position table; pos_weight: [N, 4] float32 bilinear
  weights; rowcol: [N, 2] int32 (row, col) for the 2-D rotary; segment_ids: [N] int32, one segment per
  frame (attention is block-diagonal over them).
  For attention without an [N, N] mask, the frames are also laid out padded: frame_tokens [S, Lmax]
  int32 (patch index, 0 on padding), frame_valid [S, Lmax] bool, and token_slot [N] int32, each
  patch's flat position s * Lmax + j in that layout.
  """
  pos_index: np.ndarray
  pos_weight: np.ndarray
  rowcol: np.ndarray
  segment_ids: np.ndarray
  frame_tokens: np.ndarray
  frame_valid: np.ndarray
  token_slot: np.ndarray


def vision_metadata(grid_thw, vision: VisionConfig) -> VisionMetadata:
  """Patches arrive in merge-block order (block_row, block_col, in_row, in_col) within each frame."""
  grids = _grids(grid_thw, "grid_thw")
  m = vision.spatial_merge_size
  side = int(round(vision.num_position_embeddings**0.5))
  index, weight, rowcol, segments = [], [], [], []
  segment = 0
  for t, h, w in grids:
    if h % m or w % m:
      raise InputError(f"grid_thw: h={h} and w={w} must be multiples of spatial_merge_size={m}")
    k = np.arange(h * w)
    row = (k // (m * m * (w // m))) * m + (k // m) % m
    col = ((k // (m * m)) % (w // m)) * m + k % m

    def taps(pos, size):
      # float32 arithmetic in transformers' order: idx * (side-1) / max(size-1, 1).
      src = pos.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
      lo = np.floor(src)
      frac = src - lo
      lo = lo.astype(np.int64)
      return (np.stack([lo, np.minimum(lo + 1, side - 1)], -1),
              np.stack([np.float32(1) - frac, np.float32(1) - np.abs(frac - np.float32(1))], -1))

    h_tap, h_w = taps(row, h)
    w_tap, w_w = taps(col, w)
    frame_index = (h_tap[:, :, None] * side + w_tap[:, None, :]).reshape(-1, 4)
    frame_weight = (h_w[:, :, None] * w_w[:, None, :]).reshape(-1, 4).astype(np.float32)
    for _ in range(t):
      index.append(frame_index)
      weight.append(frame_weight)
      rowcol.append(np.stack([row, col], -1))
      segments.append(np.full(h * w, segment))
      segment += 1
  if not index:
    raise InputError("grid_thw: no vision items given")
  segment_ids = np.concatenate(segments)
  lengths = np.bincount(segment_ids)
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  within = np.arange(len(segment_ids)) - starts[segment_ids]
  longest = int(lengths.max())
  frame_tokens = np.zeros((len(lengths), longest), np.int32)
  frame_tokens[segment_ids, within] = np.arange(len(segment_ids))
  frame_valid = np.arange(longest)[None, :] < lengths[:, None]
  return VisionMetadata(np.concatenate(index).astype(np.int32), np.concatenate(weight),
                        np.concatenate(rowcol).astype(np.int32), segment_ids.astype(np.int32), frame_tokens,
                        frame_valid, (segment_ids * longest + within).astype(np.int32))
