"""MRoPE positions inside jit, for prompts assembled in a fixed-size buffer with masked slots.

The streaming rollout builds each window's prompt in one fixed-shape buffer: static text, vision
frame groups, and variable-length memories padded to their slot size. Masked (unused) slots must not
shift anyone's position, so the prompt behaves exactly like the compact prompt with the slots
removed. ``get_rope_index`` (positions.py) does this on the host. Here the same rule runs on device
from a static description of the buffer:
- a text token advances the position by 1;
- the tokens of a vision frame group share the group's start position s and get (t, h, w) =
  (s, s + row, s + col); the group advances the position by max(gh, gw);
- masked tokens advance nothing.
Positions are then an exclusive cumulative sum, which jit handles.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class BufferLayout(NamedTuple):
  """Static per-slot description of a prompt buffer of length L (NumPy, built once).

  advance: [L] int32, how far a real token at that slot moves the position (1 for text; max(gh, gw)
  on the last token of a vision group, 0 on its other tokens); row, col: [L] int32 offsets of vision
  tokens inside their group (0 for text); vision: [L] bool.
  """
  advance: np.ndarray
  row: np.ndarray
  col: np.ndarray
  vision: np.ndarray

  @property
  def length(self) -> int:
    return len(self.advance)


def text_slots(n: int) -> BufferLayout:
  zeros = np.zeros(n, np.int32)
  return BufferLayout(np.ones(n, np.int32), zeros, zeros.copy(), np.zeros(n, bool))


def vision_group_slots(grid_h: int, grid_w: int, spatial_merge_size: int) -> BufferLayout:
  """One frame group (an image, or one temporal group of a video) of grid_h x grid_w patches."""
  gh, gw = grid_h // spatial_merge_size, grid_w // spatial_merge_size
  row, col = np.divmod(np.arange(gh * gw, dtype=np.int32), gw)
  advance = np.zeros(gh * gw, np.int32)
  advance[-1] = max(gh, gw)
  return BufferLayout(advance, row, col, np.ones(gh * gw, bool))


def concat(parts: list[BufferLayout]) -> BufferLayout:
  return BufferLayout(*(np.concatenate([getattr(p, f) for p in parts]) for f in BufferLayout._fields))


def layout_positions(layout: BufferLayout, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """mask: [B, L] (1 = the slot holds a real token) -> (position_ids [3, B, L] int32, rope_deltas [B, 1]).

  Matches get_rope_index on the buffer with attention_mask=mask (masked slots get position 0), as
  long as every vision group is either wholly real or wholly masked.
  """
  mask = mask.astype(jnp.int32)
  advance = jnp.asarray(layout.advance)[None, :] * mask
  # Exclusive cumsum. Only a group's last token advances, so all of a group's tokens share its start.
  start = jnp.cumsum(advance, axis=1) - advance
  vision = jnp.asarray(layout.vision)[None, :]
  t = start
  h = start + jnp.where(vision, jnp.asarray(layout.row)[None, :], 0)
  w = start + jnp.where(vision, jnp.asarray(layout.col)[None, :], 0)
  positions = jnp.stack([t, h, w]) * mask[None]
  real = jnp.sum(mask, axis=1)
  top = jnp.max(jnp.where(mask[None] > 0, positions, -1), axis=(0, 2))
  deltas = jnp.where(real > 0, top + 1 - real, 0)[:, None]
  return positions.astype(jnp.int32), deltas.astype(jnp.int32)
