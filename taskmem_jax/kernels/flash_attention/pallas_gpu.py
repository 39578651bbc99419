"""Flash attention forward and backward as Pallas kernels for the GPU (Triton lowering).

The same kernel bodies run with ``interpret=True`` on the CPU, which is how CI checks them against
reference.py. Layouts are the model's: q [B, L, Hq, D], k/v [B, S, Hkv, D]. Grouped-query attention
never repeats K/V: the BlockSpec index maps send query head h to KV head h // G (G = Hq // Hkv), and the
dK/dV kernel walks the G query heads of its KV head inside the program.

The callers (api.py) pad L and S to multiples of the block sizes and D to a power of two, and always
pass segment ids ([B, L] / [B, S] int32; padded query rows get -2 and padded keys -1, so nothing sees
them) and q_offset ([B] int32, the cache slot of query 0 for the causal test q_offset + i >= j).
Scores, softmax statistics and accumulators are fp32; each output is cast once at the end.
Softmax runs in base 2 (exp2 with log2(e) folded into the scale): one multiply fewer per score.
The log-sum-exp saved for the backward pass is therefore base 2, and +inf for a query that sees no
key, so that its recomputed probabilities are exactly 0.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

Array = jax.Array
# A finite "minus infinity": exp2(MASK - m) underflows to 0 and MASK - MASK stays finite (no NaN).
MASK = -0.7 * float(jnp.finfo(jnp.float32).max)
LOG2E = math.log2(math.e)


def _compiler_params(interpret: bool, d: int, num_stages: int = 2):
  if interpret:
    return None
  return plgpu.CompilerParams(num_warps=4 if d <= 64 else 8, num_stages=num_stages)


def _mask(q_seg, kv_seg, q_start, k_start, offset, bq: int, bk: int, causal: bool):
  """[bq, bk] bool: same segment and, if causal, q_offset + query index >= key index."""
  mask = q_seg[:, None] == kv_seg[None, :]
  if causal:
    q_pos = offset + q_start + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    mask &= q_pos >= k_pos
  return mask


def _causal_kv_blocks(offset, q_start, bq: int, bk: int, nk: int):
  """Number of key blocks a causal query block [q_start, q_start + bq) can see."""
  last = offset + q_start + bq  # one past the last visible key of the block's last query
  return jnp.clip(lax.div(last + bk - 1, bk), 0, nk)


# --- forward ------------------------------------------------------------------------------------

def _fwd_kernel(q_ref, k_ref, v_ref, qseg_ref, kvseg_ref, off_ref, o_ref, lse_ref, *,
                scale: float, causal: bool, bq: int, bk: int):
  nk = k_ref.shape[0] // bk
  i = pl.program_id(2)
  offset = off_ref[0]
  q = q_ref[...]
  q_seg = qseg_ref[...]
  qk_scale = scale * LOG2E

  def body(j, carry):
    acc, m_prev, l_prev = carry
    ks = pl.ds(j * bk, bk)
    k, v = k_ref[ks, :], v_ref[ks, :]
    s = plgpu.dot(q, k, trans_b=True) * qk_scale  # [bq, bk] fp32
    mask = _mask(q_seg, kvseg_ref[ks], i * bq, j * bk, offset, bq, bk, causal)
    s = jnp.where(mask, s, MASK)
    m_new = jnp.maximum(m_prev, s.max(axis=-1))
    p = jnp.where(mask, jnp.exp2(s - m_new[:, None]), 0.0)
    alpha = jnp.exp2(m_prev - m_new)
    acc = acc * alpha[:, None] + plgpu.dot(p.astype(v.dtype), v)
    return acc, m_new, l_prev * alpha + p.sum(axis=-1)

  d = q.shape[-1]
  init = (jnp.zeros((bq, d), jnp.float32), jnp.full((bq,), MASK, jnp.float32), jnp.zeros((bq,), jnp.float32))
  hi = _causal_kv_blocks(offset, i * bq, bq, bk, nk) if causal else nk
  acc, m, l = lax.fori_loop(0, hi, body, init)
  empty = l == 0.0
  o_ref[...] = (acc / jnp.where(empty, 1.0, l)[:, None]).astype(o_ref.dtype)
  lse_ref[...] = jnp.where(empty, jnp.inf, m + jnp.log2(jnp.where(empty, 1.0, l)))


def forward(q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array, q_offset: Array, *, scale: float,
            causal: bool, block_q: int, block_k: int, interpret: bool) -> tuple[Array, Array]:
  """Padded inputs (see the module docstring) -> (out [B, L, Hq, D] in q.dtype, lse [B, Hq, L] fp32, base 2)."""
  b, l, hq, d = q.shape
  s, hkv = k.shape[1], k.shape[2]
  g = hq // hkv
  kernel = functools.partial(_fwd_kernel, scale=scale, causal=causal, bq=block_q, bk=block_k)
  return pl.pallas_call(
      kernel,
      grid=(b, hq, l // block_q),
      in_specs=[
          pl.BlockSpec((None, block_q, None, d), lambda bi, h, i: (bi, i, h, 0)),
          pl.BlockSpec((None, s, None, d), lambda bi, h, i: (bi, 0, h // g, 0)),  # GQA: no repeat
          pl.BlockSpec((None, s, None, d), lambda bi, h, i: (bi, 0, h // g, 0)),
          pl.BlockSpec((None, block_q), lambda bi, h, i: (bi, i)),
          pl.BlockSpec((None, s), lambda bi, h, i: (bi, 0)),
          pl.BlockSpec((1,), lambda bi, h, i: (bi,)),
      ],
      out_specs=[
          pl.BlockSpec((None, block_q, None, d), lambda bi, h, i: (bi, i, h, 0)),
          pl.BlockSpec((None, None, block_q), lambda bi, h, i: (bi, h, i)),
      ],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, hq, l), jnp.float32)],
      compiler_params=_compiler_params(interpret, d),
      interpret=interpret,
      name="flash_attention_fwd",
  )(q, k, v, q_seg, kv_seg, q_offset)


# --- backward -----------------------------------------------------------------------------------

def _dq_kernel(q_ref, k_ref, v_ref, qseg_ref, kvseg_ref, off_ref, do_ref, lse_ref, delta_ref, dq_ref, *,
               scale: float, causal: bool, bq: int, bk: int):
  nk = k_ref.shape[0] // bk
  i = pl.program_id(2)
  offset = off_ref[0]
  q, do = q_ref[...], do_ref[...]
  q_seg, lse, delta = qseg_ref[...], lse_ref[...], delta_ref[...]

  def body(j, dq):
    ks = pl.ds(j * bk, bk)
    k, v = k_ref[ks, :], v_ref[ks, :]
    s = plgpu.dot(q, k, trans_b=True) * (scale * LOG2E)
    mask = _mask(q_seg, kvseg_ref[ks], i * bq, j * bk, offset, bq, bk, causal)
    p = jnp.where(mask, jnp.exp2(s - lse[:, None]), 0.0)
    dp = plgpu.dot(do, v, trans_b=True)
    ds = p * (dp - delta[:, None]) * scale
    return dq + plgpu.dot(ds.astype(k.dtype), k)

  hi = _causal_kv_blocks(offset, i * bq, bq, bk, nk) if causal else nk
  dq = lax.fori_loop(0, hi, body, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, qseg_ref, kvseg_ref, off_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *,
                scale: float, causal: bool, bq: int, bk: int, groups: int):
  nq = q_ref.shape[0] // bq
  j = pl.program_id(2)
  offset = off_ref[0]
  k, v = k_ref[...], v_ref[...]
  kv_seg = kvseg_ref[...]
  # Causal: the first query block whose last query reaches this key block's first key.
  lo = jnp.clip(lax.div(jnp.maximum(j * bk - offset, 0), bq), 0, nq) if causal else 0

  def body(i, carry, g: int):
    dk, dv = carry
    qs = pl.ds(i * bq, bq)
    q, do = q_ref[qs, g, :], do_ref[qs, g, :]
    lse, delta = lse_ref[g, qs], delta_ref[g, qs]
    s = plgpu.dot(q, k, trans_b=True) * (scale * LOG2E)
    mask = _mask(qseg_ref[qs], kv_seg, i * bq, j * bk, offset, bq, bk, causal)
    p = jnp.where(mask, jnp.exp2(s - lse[:, None]), 0.0)  # [bq, bk]
    dv = dv + plgpu.dot(p.astype(do.dtype), do, trans_a=True)
    dp = plgpu.dot(do, v, trans_b=True)
    ds = p * (dp - delta[:, None]) * scale
    dk = dk + plgpu.dot(ds.astype(q.dtype), q, trans_a=True)
    return dk, dv

  carry = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
  for g in range(groups):  # the G query heads that read this KV head; static, so plain indexing
    carry = lax.fori_loop(lo, nq, functools.partial(body, g=g), carry)
  dk_ref[...] = carry[0].astype(dk_ref.dtype)
  dv_ref[...] = carry[1].astype(dv_ref.dtype)


def backward(q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array, q_offset: Array, out: Array, lse: Array,
             do: Array, *, scale: float, causal: bool, block_q: int, block_k: int,
             interpret: bool) -> tuple[Array, Array, Array]:
  """Padded inputs, the forward's out and lse, and dout [B, L, Hq, D] -> (dq, dk, dv) in the inputs' dtypes."""
  b, l, hq, d = q.shape
  s, hkv = k.shape[1], k.shape[2]
  g = hq // hkv
  # delta_i = sum_d out * dout: one fused XLA reduction, [B, Hq, L] fp32.
  delta = jnp.einsum("blhd,blhd->bhl", out.astype(jnp.float32), do.astype(jnp.float32))
  common = dict(scale=scale, causal=causal, bq=block_q, bk=block_k)
  params = _compiler_params(interpret, d, num_stages=1)

  dq = pl.pallas_call(
      functools.partial(_dq_kernel, **common),
      grid=(b, hq, l // block_q),
      in_specs=[
          pl.BlockSpec((None, block_q, None, d), lambda bi, h, i: (bi, i, h, 0)),
          pl.BlockSpec((None, s, None, d), lambda bi, h, i: (bi, 0, h // g, 0)),
          pl.BlockSpec((None, s, None, d), lambda bi, h, i: (bi, 0, h // g, 0)),
          pl.BlockSpec((None, block_q), lambda bi, h, i: (bi, i)),
          pl.BlockSpec((None, s), lambda bi, h, i: (bi, 0)),
          pl.BlockSpec((1,), lambda bi, h, i: (bi,)),
          pl.BlockSpec((None, block_q, None, d), lambda bi, h, i: (bi, i, h, 0)),
          pl.BlockSpec((None, None, block_q), lambda bi, h, i: (bi, h, i)),
          pl.BlockSpec((None, None, block_q), lambda bi, h, i: (bi, h, i)),
      ],
      out_specs=pl.BlockSpec((None, block_q, None, d), lambda bi, h, i: (bi, i, h, 0)),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=params,
      interpret=interpret,
      name="flash_attention_dq",
  )(q, k, v, q_seg, kv_seg, q_offset, do, lse, delta)

  # One program per (row, KV head, key block): it owns dK/dV of that block, so no atomics and no
  # per-query-head dK/dV to sum afterwards. The q/dout blocks hold the G heads h*G .. h*G + G - 1.
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, groups=g, **common),
      grid=(b, hkv, s // block_k),
      in_specs=[
          pl.BlockSpec((None, l, g, d), lambda bi, h, j: (bi, 0, h, 0)),
          pl.BlockSpec((None, block_k, None, d), lambda bi, h, j: (bi, j, h, 0)),
          pl.BlockSpec((None, block_k, None, d), lambda bi, h, j: (bi, j, h, 0)),
          pl.BlockSpec((None, l), lambda bi, h, j: (bi, 0)),
          pl.BlockSpec((None, block_k), lambda bi, h, j: (bi, j)),
          pl.BlockSpec((1,), lambda bi, h, j: (bi,)),
          pl.BlockSpec((None, l, g, d), lambda bi, h, j: (bi, 0, h, 0)),
          pl.BlockSpec((None, g, l), lambda bi, h, j: (bi, h, 0)),
          pl.BlockSpec((None, g, l), lambda bi, h, j: (bi, h, 0)),
      ],
      out_specs=[
          pl.BlockSpec((None, block_k, None, d), lambda bi, h, j: (bi, j, h, 0)),
          pl.BlockSpec((None, block_k, None, d), lambda bi, h, j: (bi, j, h, 0)),
      ],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      compiler_params=params,
      interpret=interpret,
      name="flash_attention_dkv",
  )(q, k, v, q_seg, kv_seg, q_offset, do, lse, delta)
  return dq, dk, dv
