"""decode_attention: one query token per row over a KV cache; the XLA reference or the split-K Pallas kernel.

Inference only (no VJP): training and prefill use kernels.flash_attention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from taskmem_jax.kernels.decode_attention import pallas_gpu, reference
from taskmem_jax.kernels.flash_attention.api import _next_pow2, _round_up, default_interpret, platform, resolve_impl

Array = jax.Array


def default_num_splits(b: int, hkv: int, s: int, block_k: int) -> int:
  """Enough programs to cover ~2 waves of an H100's 132 SMs, at least 4 key blocks per split, and a
  divisor of the number of key blocks, so that a cache of a multiple of block_k is never padded (copied)."""
  blocks = -(-s // block_k)
  target = max(1, min(264 // (b * hkv), blocks // 4))
  return next(n for n in range(target, 0, -1) if blocks % n == 0)


def decode_attention(q: Array, k: Array, v: Array, lengths: Array | int, *, kv_mask: Array | None = None,
                     scale: float | None = None, impl: str = "auto", interpret: bool | None = None,
                     block_k: int = 64, num_splits: int | None = None) -> Array:
  """q: [B, Hq, D]; k, v: [B, S, Hkv, D]; lengths: int or [B] int (may be traced); kv_mask: [B, S] bool.

  Key j is visible to row b when j < lengths[b] and kv_mask[b, j]; a row with no visible key gets zeros.
  Returns [B, Hq, D] in q.dtype. Scores, softmax and the merge of the splits run in fp32.
  """
  b, hq, d = q.shape
  s, hkv = k.shape[1], k.shape[2]
  if hq % hkv:
    raise ValueError(f"{hq} query heads are not a multiple of {hkv} KV heads")
  if block_k & (block_k - 1):
    raise ValueError(f"block_k={block_k}: must be a power of two (Triton's tiles)")
  scale = d**-0.5 if scale is None else float(scale)
  lengths = jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), (b,))
  # No Mosaic TPU decode kernel yet: on a TPU, decode runs the XLA reference (memory-bound either way).
  if resolve_impl(impl) in ("xla", "chunked") or platform() == "tpu":
    return reference.decode_attention(q, k, v, lengths, kv_mask=kv_mask, scale=scale)
  interpret = default_interpret() if interpret is None else interpret
  g = hq // hkv
  bk = min(block_k, max(16, _next_pow2(s)))
  splits = num_splits or default_num_splits(b, hkv, s, bk)
  chunk = _round_up(-(-s // splits), bk)
  sp, dp = chunk * splits, max(16, _next_pow2(d))
  gp = g if interpret else max(16, _next_pow2(g))  # Triton's dot wants >= 16 rows
  mask = jnp.ones((b, s), jnp.int32) if kv_mask is None else kv_mask.astype(jnp.int32)
  mask = jnp.pad(mask, ((0, 0), (0, sp - s)))
  # Only copies the cache when its length or head dim is off the blocking; the model's caches are not.
  pad_kv = lambda x: jnp.pad(x, ((0, 0), (0, sp - s), (0, 0), (0, dp - d))) if (sp, dp) != (s, d) else x
  qg = jnp.pad(q.reshape(b, hkv, g, d), ((0, 0), (0, 0), (0, gp - g), (0, dp - d)))
  acc, m, l = pallas_gpu.decode_partials(qg, pad_kv(k), pad_kv(v), mask, lengths, scale=scale, block_k=bk,
                                         num_splits=splits, interpret=bool(interpret))
  # Merge the splits: rescale each to the global max (base 2), then normalise once.
  w = jnp.exp2(m - m.max(axis=1, keepdims=True))  # [B, splits, Hkv, G]
  total = (w * l).sum(axis=1)
  out = (w[..., None] * acc).sum(axis=1) / jnp.where(total == 0.0, 1.0, total)[..., None]
  return out[:, :, :g, :d].reshape(b, hq, d).astype(q.dtype)
