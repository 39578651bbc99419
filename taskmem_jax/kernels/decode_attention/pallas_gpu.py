"""Decode attention as a split-K Pallas kernel for the GPU (Triton lowering); interpretable on CPU.

One query token per row. Each program owns (row b, KV head h, split s): it reads the G = Hq / Hkv query
heads of KV head h at once ([G, D], so K/V are read once per KV head, never repeated) and walks
the key blocks of its split of the cache, stopping at the row's length, with an fp32 online
softmax. Splitting the cache is what fills the GPU at batch 1 (B * Hkv programs alone are too few
to use the HBM bandwidth); the splits' partial (acc, max, sum) are merged in api.py.

The caller pads S to num_splits * chunk (chunk a multiple of block_k) with kv_mask 0, D to a power
of two, and G to at least 16 rows on the GPU (the Triton dot's minimum).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from taskmem_jax.kernels.flash_attention.pallas_gpu import LOG2E, MASK

Array = jax.Array


def _kernel(q_ref, k_ref, v_ref, mask_ref, len_ref, o_ref, m_ref, l_ref, *, scale: float, bk: int):
  chunk = k_ref.shape[0]
  start = pl.program_id(2) * chunk
  length = len_ref[0]
  q = q_ref[...]  # [G, D]
  g, d = q.shape

  def body(j, carry):
    acc, m_prev, l_prev = carry
    ks = pl.ds(j * bk, bk)
    k, v = k_ref[ks, :], v_ref[ks, :]
    s = plgpu.dot(q, k, trans_b=True) * (scale * LOG2E)  # [G, bk] fp32
    pos = start + j * bk + lax.broadcasted_iota(jnp.int32, (g, bk), 1)
    visible = (pos < length) & (mask_ref[ks][None, :] != 0)
    s = jnp.where(visible, s, MASK)
    m_new = jnp.maximum(m_prev, s.max(axis=-1))
    p = jnp.where(visible, jnp.exp2(s - m_new[:, None]), 0.0)
    alpha = jnp.exp2(m_prev - m_new)
    return acc * alpha[:, None] + plgpu.dot(p.astype(v.dtype), v), m_new, l_prev * alpha + p.sum(axis=-1)

  # Key blocks of this split below the row's length; the rest of the cache is never read.
  hi = jnp.clip(lax.div(length - start + bk - 1, bk), 0, chunk // bk)
  init = (jnp.zeros((g, d), jnp.float32), jnp.full((g,), MASK, jnp.float32), jnp.zeros((g,), jnp.float32))
  acc, m, l = lax.fori_loop(0, hi, body, init)
  o_ref[...] = acc
  m_ref[...] = m
  l_ref[...] = l


def decode_partials(q: Array, k: Array, v: Array, kv_mask: Array, lengths: Array, *, scale: float, block_k: int,
                    num_splits: int, interpret: bool) -> tuple[Array, Array, Array]:
  """q: [B, Hkv, G, D]; k, v: [B, S, Hkv, D] (S = num_splits * chunk); kv_mask: [B, S] int32; lengths: [B] int32.

  Returns per split the unnormalised fp32 acc [B, splits, Hkv, G, D], the base-2 max m and sum l [B, splits, Hkv, G].
  """
  b, hkv, g, d = q.shape
  chunk = k.shape[1] // num_splits
  params = None if interpret else plgpu.CompilerParams(num_warps=4, num_stages=2)
  return pl.pallas_call(
      functools.partial(_kernel, scale=scale, bk=block_k),
      grid=(b, hkv, num_splits),
      in_specs=[
          pl.BlockSpec((None, None, g, d), lambda bi, h, s: (bi, h, 0, 0)),
          pl.BlockSpec((None, chunk, None, d), lambda bi, h, s: (bi, s, h, 0)),
          pl.BlockSpec((None, chunk, None, d), lambda bi, h, s: (bi, s, h, 0)),
          pl.BlockSpec((None, chunk), lambda bi, h, s: (bi, s)),
          pl.BlockSpec((1,), lambda bi, h, s: (bi,)),
      ],
      out_specs=[
          pl.BlockSpec((None, None, None, g, d), lambda bi, h, s: (bi, s, h, 0, 0)),
          pl.BlockSpec((None, None, None, g), lambda bi, h, s: (bi, s, h, 0)),
          pl.BlockSpec((None, None, None, g), lambda bi, h, s: (bi, s, h, 0)),
      ],
      out_shape=[jax.ShapeDtypeStruct((b, num_splits, hkv, g, d), jnp.float32),
                 jax.ShapeDtypeStruct((b, num_splits, hkv, g), jnp.float32),
                 jax.ShapeDtypeStruct((b, num_splits, hkv, g), jnp.float32)],
      compiler_params=params,
      interpret=interpret,
      name="decode_attention",
  )(q, k, v, kv_mask, lengths)
