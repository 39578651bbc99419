"""flash_attention: one entry point that picks the XLA reference or a Pallas kernel.

The Pallas path is a jax.custom_vjp: the forward kernel saves the (base-2) log-sum-exp, and two
backward kernels recompute the probabilities block by block for dQ and for dK/dV, so neither pass
holds an [L, S] matrix. Padding to the block sizes happens here, outside the custom VJP, so autodiff
slices the gradients back for free.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from kernels.flash_attention import pallas_gpu, reference

Array = jax.Array


def resolve_impl(impl: str) -> str:
  """"auto" -> "pallas" on GPU, "xla" elsewhere (CPU; TPU until a Mosaic TPU kernel lands)."""
  if impl not in ("auto", "xla", "pallas"):
    raise ValueError(f"attention impl={impl!r}: expected 'auto', 'xla' or 'pallas'")
  if impl == "auto":
    return "pallas" if jax.default_backend() == "gpu" else "xla"
  return impl


def default_interpret() -> bool:
  """Interpret mode wherever there is no compiled backend for our kernels (CPU; TPU for now)."""
  return jax.default_backend() != "gpu"


def _next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


class _Static(NamedTuple):
  scale: float
  causal: bool
  block_q: int
  block_k: int
  interpret: bool


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _flash(q, k, v, q_seg, kv_seg, q_offset, st: _Static):
  return pallas_gpu.forward(q, k, v, q_seg, kv_seg, q_offset, **st._asdict())[0]


def _flash_fwd(q, k, v, q_seg, kv_seg, q_offset, st: _Static):
  out, lse = pallas_gpu.forward(q, k, v, q_seg, kv_seg, q_offset, **st._asdict())
  return out, (q, k, v, q_seg, kv_seg, q_offset, out, lse)


def _flash_bwd(st: _Static, res, do):
  q, k, v, q_seg, kv_seg, q_offset, out, lse = res
  dq, dk, dv = pallas_gpu.backward(q, k, v, q_seg, kv_seg, q_offset, out, lse, do, **st._asdict())
  return dq, dk, dv, None, None, None  # integer inputs: no cotangent


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q: Array, k: Array, v: Array, *, causal: bool = False, q_segment_ids: Array | None = None,
                    kv_segment_ids: Array | None = None, q_offset: Array | int = 0, scale: float | None = None,
                    impl: str = "auto", interpret: bool | None = None, block_q: int = 64,
                    block_k: int = 64) -> Array:
  """Multi-head attention with GQA, causal masking and segment ids.

  q: [B, L, Hq, D]; k, v: [B, S, Hkv, D] with Hq a multiple of Hkv (query head h reads KV head
  h // (Hq // Hkv); K/V are never repeated). Returns [B, L, Hq, D] in q.dtype.
  causal: query i (at cache slot q_offset + i) sees keys j <= q_offset + i.
  q_segment_ids [B, L] / kv_segment_ids [B, S]: non-negative ints; a query sees only keys with its
    segment id. Padding: give padding tokens their own id (the model uses 0 for padding, 1 for real
    tokens). Block-diagonal (per-frame) attention: one id per frame.
  q_offset: int or [B] int array (may be traced): the slot of query 0 when S is a KV cache.
  A query that sees no key returns zeros. Scores and softmax run in fp32; the output is cast once.
  impl: "xla" (reference.py, plain jnp), "pallas" (pallas_gpu.py; interpret mode unless on a GPU), or
    "auto" (resolve_impl). Block sizes are clipped to the (power-of-two rounded) sequence lengths.
  """
  b, l, hq, d = q.shape
  s, hkv = k.shape[1], k.shape[2]
  if hq % hkv:
    raise ValueError(f"{hq} query heads are not a multiple of {hkv} KV heads")
  if block_q & (block_q - 1) or block_k & (block_k - 1):
    raise ValueError(f"block_q={block_q}, block_k={block_k}: must be powers of two (Triton's tiles)")
  scale = d**-0.5 if scale is None else float(scale)
  if resolve_impl(impl) == "xla":
    return reference.attention(q, k, v, causal=causal, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
                               q_offset=q_offset, scale=scale)
  interpret = default_interpret() if interpret is None else interpret
  bq = min(block_q, max(16, _next_pow2(l)))
  bk = min(block_k, max(16, _next_pow2(s)))
  lp, sp, dp = _round_up(l, bq), _round_up(s, bk), max(16, _next_pow2(d))
  q_seg = jnp.zeros((b, l), jnp.int32) if q_segment_ids is None else q_segment_ids.astype(jnp.int32)
  kv_seg = jnp.zeros((b, s), jnp.int32) if kv_segment_ids is None else kv_segment_ids.astype(jnp.int32)
  # Padded queries (-2) and keys (-1) match nothing; zero columns of D change no score.
  q_seg = jnp.pad(q_seg, ((0, 0), (0, lp - l)), constant_values=-2)
  kv_seg = jnp.pad(kv_seg, ((0, 0), (0, sp - s)), constant_values=-1)
  pad = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, dp - d))) if (n, dp) != x.shape[1::2] else x
  offset = jnp.broadcast_to(jnp.asarray(q_offset, jnp.int32), (b,))
  st = _Static(scale=scale, causal=causal, block_q=bq, block_k=bk, interpret=bool(interpret))
  out = _flash(pad(q, lp), pad(k, sp), pad(v, sp), q_seg, kv_seg, offset, st)
  return out[:, :l, :, :d]
