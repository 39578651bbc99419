"""Plain-jnp decode attention: one query token per row over a KV cache; the tests' ground truth.

Key j is visible to row b when j < lengths[b] and kv_mask[b, j] (the model passes cache_index + 1
as the length and its slot mask, which is 0 on left padding). A row that sees no key returns zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def decode_attention(q: Array, k: Array, v: Array, lengths: Array, *, kv_mask: Array | None = None,
                     scale: float | None = None) -> Array:
  """q: [B, Hq, D]; k, v: [B, S, Hkv, D]; lengths: [B] int; kv_mask: [B, S] bool. Returns [B, Hq, D] in q.dtype."""
  b, hq, d = q.shape
  s, hkv = k.shape[1], k.shape[2]
  scale = d**-0.5 if scale is None else scale
  visible = jnp.arange(s)[None, :] < jnp.asarray(lengths, jnp.int32).reshape(-1, 1)
  if kv_mask is not None:
    visible &= kv_mask.astype(bool)
  qg = q.reshape(b, hkv, hq // hkv, d)
  scores = jnp.einsum("bhgd,bshd->bhgs", qg, k, preferred_element_type=jnp.float32) * scale
  scores = jnp.where(visible[:, None, None], scores, -jnp.inf)
  any_visible = visible.any(-1)[:, None, None, None]
  probs = jax.nn.softmax(jnp.where(any_visible, scores, 0.0), axis=-1)
  probs = jnp.where(any_visible, probs, 0.0).astype(v.dtype)
  out = jnp.einsum("bhgs,bshd->bhgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, hq, d).astype(q.dtype)
