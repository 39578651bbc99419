"""Plain-jnp attention with the same mask semantics as the flash kernels: the tests' ground truth.

Visibility of key j to query i in row b (all conditions must hold):
  - segment ids equal: q_segment_ids[b, i] == kv_segment_ids[b, j];
  - causal only: q_offset[b] + i >= j (the query at cache slot q_offset + i sees slots <= its own).
A query that sees no key outputs zeros (and gets zero gradient), as the kernels do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def visibility(l: int, s: int, *, causal: bool, q_segment_ids: Array, kv_segment_ids: Array,
               q_offset: Array) -> Array:
  """[B, L, S] bool. q_segment_ids: [B, L]; kv_segment_ids: [B, S]; q_offset: [B] int."""
  mask = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  if causal:
    q_pos = q_offset[:, None] + jnp.arange(l)[None, :]
    mask &= q_pos[:, :, None] >= jnp.arange(s)[None, None, :]
  return mask


def attention(q: Array, k: Array, v: Array, *, causal: bool = False, q_segment_ids: Array | None = None,
              kv_segment_ids: Array | None = None, q_offset: Array | int = 0, scale: float | None = None) -> Array:
  """q: [B, L, Hq, D]; k, v: [B, S, Hkv, D] (Hq a multiple of Hkv). Returns [B, L, Hq, D] in q.dtype.

  Grouped-query attention without repeating K/V: query head i reads KV head i // (Hq // Hkv).
  Scores and softmax in fp32; probabilities cast to v.dtype for the PV product (as the kernels do).
  """
  b, l, hq, d = q.shape
  s, hkv = k.shape[1], k.shape[2]
  scale = d**-0.5 if scale is None else scale
  q_seg = jnp.zeros((b, l), jnp.int32) if q_segment_ids is None else q_segment_ids.astype(jnp.int32)
  kv_seg = jnp.zeros((b, s), jnp.int32) if kv_segment_ids is None else kv_segment_ids.astype(jnp.int32)
  offset = jnp.broadcast_to(jnp.asarray(q_offset, jnp.int32), (b,))
  mask = visibility(l, s, causal=causal, q_segment_ids=q_seg, kv_segment_ids=kv_seg, q_offset=offset)
  qg = q.reshape(b, l, hkv, hq // hkv, d)
  scores = jnp.einsum("blhgd,bshd->bhgls", qg, k, preferred_element_type=jnp.float32) * scale
  scores = jnp.where(mask[:, None, None], scores, -jnp.inf)
  any_visible = mask.any(-1)[:, None, None, :, None]
  # Rows with no visible key: softmax of a safe row, then zeroed, so neither value nor gradient is NaN.
  probs = jax.nn.softmax(jnp.where(any_visible, scores, 0.0), axis=-1)
  probs = jnp.where(any_visible, probs, 0.0).astype(v.dtype)
  out = jnp.einsum("bhgls,bshd->blhgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, l, hq, d).astype(q.dtype)
