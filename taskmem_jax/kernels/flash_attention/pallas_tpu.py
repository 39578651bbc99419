"""Flash attention forward and backward as Pallas Mosaic TPU kernels; interpretable on CPU.

Same semantics and padding contract as pallas_gpu.py (see its docstring), with the TPU's shape:
the key loop is the last grid axis ("arbitrary", sequential on a core) with the softmax statistics and
accumulators in VMEM scratch, and every block's last two dims are tiles (multiples of 8 x 128 on the
hardware, or the full dim). So the caller passes heads-major layouts, q [B, Hq, L, D] and k/v
[B, Hkv, S, D], query segment ids as a column [B, L, 1] and key segment ids as a row [B, 1, S].
GQA: the index maps send query head h to KV head h // G; the dK/dV kernel's grid walks the G query heads
of its KV head as a reduction axis. q_offset [B] is a scalar-prefetch operand (SMEM), read by the index
maps to skip causally invisible blocks: their index is clamped to the last visible one, so the pipeline
issues no DMA for them, and pl.when skips their compute.
Natural-log softmax here (the log-sum-exp output, [B, Hq, L, 1], is in nats, unlike the GPU kernels).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from taskmem_jax.kernels.flash_attention.pallas_gpu import MASK

Array = jax.Array


def _dot(a, b, contract=(1, 1)):
  """fp32-accumulated a @ b.T (contract=(1, 1)), a @ b ((1, 0)) or a.T @ b ((0, 0))."""
  return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())), preferred_element_type=jnp.float32)


def _kv_hi(offset, i, bq: int, bk: int, nk: int):
  """Number of key blocks the causal query block i can see (at least 1, so index maps stay in range)."""
  return jnp.clip(lax.div(offset + (i + 1) * bq + bk - 1, bk), 1, nk)


def _q_lo(offset, j, bq: int, bk: int, nq: int):
  """First query block that can see the causal key block j (at most nq - 1)."""
  return jnp.clip(lax.div(jnp.maximum(j * bk - offset, 0), bq), 0, nq - 1)


def _mask(qseg_ref, kvseg_ref, offset, i, j, bq: int, bk: int, causal: bool):
  mask = qseg_ref[...] == kvseg_ref[...]  # [bq, 1] == [1, bk] -> [bq, bk]
  if causal:
    q_pos = offset + i * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    mask &= q_pos >= j * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
  return mask


def _params(interpret: bool, semantics):
  return None if interpret else pltpu.CompilerParams(dimension_semantics=semantics)


def _query_block_start(off_ref, acc_ref):
  """In a kernel over (batch, head, query block i, key block j): (i, j, the row's cache offset), with the
  fp32 accumulator zeroed at the first key block."""
  b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(j == 0)
  def _():
    acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

  return i, j, off_ref[b]


# --- forward ------------------------------------------------------------------------------------

def _fwd_kernel(off_ref, q_ref, k_ref, v_ref, qseg_ref, kvseg_ref, o_ref, lse_ref, acc_ref, m_ref, l_ref, *,
                scale: float, causal: bool, bq: int, bk: int, nk: int):
  i, j, offset = _query_block_start(off_ref, acc_ref)

  @pl.when(j == 0)
  def _():
    m_ref[...] = jnp.full(m_ref.shape, MASK, jnp.float32)
    l_ref[...] = jnp.zeros(l_ref.shape, jnp.float32)

  @pl.when(j < _kv_hi(offset, i, bq, bk, nk) if causal else True)
  def _():
    s = _dot(q_ref[...], k_ref[...]) * scale  # [bq, bk]
    mask = _mask(qseg_ref, kvseg_ref, offset, i, j, bq, bk, causal)
    s = jnp.where(mask, s, MASK)
    m_prev = m_ref[...]
    m_new = jnp.maximum(m_prev, s.max(axis=-1, keepdims=True))
    p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
    alpha = jnp.exp(m_prev - m_new)
    acc_ref[...] = acc_ref[...] * alpha + _dot(p.astype(v_ref.dtype), v_ref[...], (1, 0))
    l_ref[...] = l_ref[...] * alpha + p.sum(axis=-1, keepdims=True)
    m_ref[...] = m_new

  @pl.when(j == nk - 1)
  def _():
    l = l_ref[...]
    empty = l == 0.0
    o_ref[...] = (acc_ref[...] / jnp.where(empty, 1.0, l)).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, jnp.inf, m_ref[...] + jnp.log(jnp.where(empty, 1.0, l)))


def forward(q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array, q_offset: Array, *, scale: float,
            causal: bool, block_q: int, block_k: int, interpret: bool) -> tuple[Array, Array]:
  """q [B, Hq, L, D], k/v [B, Hkv, S, D], q_seg [B, L, 1], kv_seg [B, 1, S], q_offset [B]
  -> (out [B, Hq, L, D] in q.dtype, lse [B, Hq, L, 1] fp32)."""
  b, hq, l, d = q.shape
  hkv, s = k.shape[1], k.shape[2]
  g, nq, nk = hq // hkv, l // block_q, s // block_k
  bq, bk = block_q, block_k
  kv_j = (lambda off, bi, i, j: jnp.minimum(j, _kv_hi(off[bi], i, bq, bk, nk) - 1)) if causal else (
      lambda off, bi, i, j: j)
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=1,
      grid=(b, hq, nq, nk),
      in_specs=[
          pl.BlockSpec((None, None, bq, d), lambda bi, h, i, j, off: (bi, h, i, 0)),
          pl.BlockSpec((None, None, bk, d), lambda bi, h, i, j, off: (bi, lax.div(h, g), kv_j(off, bi, i, j), 0)),
          pl.BlockSpec((None, None, bk, d), lambda bi, h, i, j, off: (bi, lax.div(h, g), kv_j(off, bi, i, j), 0)),
          pl.BlockSpec((None, bq, 1), lambda bi, h, i, j, off: (bi, i, 0)),
          pl.BlockSpec((None, 1, bk), lambda bi, h, i, j, off: (bi, 0, kv_j(off, bi, i, j))),
      ],
      out_specs=[
          pl.BlockSpec((None, None, bq, d), lambda bi, h, i, j, off: (bi, h, i, 0)),
          pl.BlockSpec((None, None, bq, 1), lambda bi, h, i, j, off: (bi, h, i, 0)),
      ],
      scratch_shapes=[pltpu.VMEM((bq, d), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32),
                      pltpu.VMEM((bq, 1), jnp.float32)],
  )
  kernel = functools.partial(_fwd_kernel, scale=scale, causal=causal, bq=bq, bk=bk, nk=nk)
  return pl.pallas_call(
      kernel, grid_spec=grid_spec,
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, hq, l, 1), jnp.float32)],
      compiler_params=_params(interpret, ("parallel", "parallel", "parallel", "arbitrary")),
      interpret=interpret, name="flash_attention_fwd_tpu",
  )(q_offset, q, k, v, q_seg, kv_seg)


# --- backward -----------------------------------------------------------------------------------

def _probs_and_ds(q, k, v, do, lse, delta, mask, scale):
  """Recomputed probabilities p and dS (already times scale), both [bq, bk] fp32."""
  p = jnp.where(mask, jnp.exp(_dot(q, k) * scale - lse), 0.0)
  ds = p * (_dot(do, v) - delta) * scale
  return p, ds


def _dq_kernel(off_ref, q_ref, k_ref, v_ref, qseg_ref, kvseg_ref, do_ref, lse_ref, delta_ref, dq_ref, acc_ref, *,
               scale: float, causal: bool, bq: int, bk: int, nk: int):
  i, j, offset = _query_block_start(off_ref, acc_ref)

  @pl.when(j < _kv_hi(offset, i, bq, bk, nk) if causal else True)
  def _():
    mask = _mask(qseg_ref, kvseg_ref, offset, i, j, bq, bk, causal)
    k = k_ref[...]
    _, ds = _probs_and_ds(q_ref[...], k, v_ref[...], do_ref[...], lse_ref[...], delta_ref[...], mask, scale)
    acc_ref[...] += _dot(ds.astype(k.dtype), k, (1, 0))

  @pl.when(j == nk - 1)
  def _():
    dq_ref[...] = acc_ref[...].astype(dq_ref.dtype)


def _dkv_kernel(off_ref, q_ref, k_ref, v_ref, qseg_ref, kvseg_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref,
                dk_acc, dv_acc, *, scale: float, causal: bool, bq: int, bk: int, nq: int, groups: int):
  b, j, g, i = pl.program_id(0), pl.program_id(2), pl.program_id(3), pl.program_id(4)
  offset = off_ref[b]

  @pl.when((g == 0) & (i == 0))
  def _():
    dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
    dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)

  @pl.when(i >= _q_lo(offset, j, bq, bk, nq) if causal else True)
  def _():
    mask = _mask(qseg_ref, kvseg_ref, offset, i, j, bq, bk, causal)
    q, do = q_ref[...], do_ref[...]
    p, ds = _probs_and_ds(q, k_ref[...], v_ref[...], do, lse_ref[...], delta_ref[...], mask, scale)
    dv_acc[...] += _dot(p.astype(do.dtype), do, (0, 0))
    dk_acc[...] += _dot(ds.astype(q.dtype), q, (0, 0))

  @pl.when((g == groups - 1) & (i == nq - 1))
  def _():
    dk_ref[...] = dk_acc[...].astype(dk_ref.dtype)
    dv_ref[...] = dv_acc[...].astype(dv_ref.dtype)


def backward(q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array, q_offset: Array, out: Array, lse: Array,
             do: Array, *, scale: float, causal: bool, block_q: int, block_k: int,
             interpret: bool) -> tuple[Array, Array, Array]:
  """Layouts as forward; out, do [B, Hq, L, D]; lse [B, Hq, L, 1] -> (dq, dk, dv) in the inputs' dtypes."""
  b, hq, l, d = q.shape
  hkv, s = k.shape[1], k.shape[2]
  g, nq, nk = hq // hkv, l // block_q, s // block_k
  bq, bk = block_q, block_k
  delta = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1, keepdims=True)  # [B, Hq, L, 1]

  kv_j = (lambda off, bi, i, j: jnp.minimum(j, _kv_hi(off[bi], i, bq, bk, nk) - 1)) if causal else (
      lambda off, bi, i, j: j)
  q_block = pl.BlockSpec((None, None, bq, d), lambda bi, h, i, j, off: (bi, h, i, 0))
  row = pl.BlockSpec((None, None, bq, 1), lambda bi, h, i, j, off: (bi, h, i, 0))
  kv_block = pl.BlockSpec((None, None, bk, d), lambda bi, h, i, j, off: (bi, lax.div(h, g), kv_j(off, bi, i, j), 0))
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, scale=scale, causal=causal, bq=bq, bk=bk, nk=nk),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=1, grid=(b, hq, nq, nk),
          in_specs=[q_block, kv_block, kv_block,
                    pl.BlockSpec((None, bq, 1), lambda bi, h, i, j, off: (bi, i, 0)),
                    pl.BlockSpec((None, 1, bk), lambda bi, h, i, j, off: (bi, 0, kv_j(off, bi, i, j))),
                    q_block, row, row],
          out_specs=q_block,
          scratch_shapes=[pltpu.VMEM((bq, d), jnp.float32)]),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=_params(interpret, ("parallel", "parallel", "parallel", "arbitrary")),
      interpret=interpret, name="flash_attention_dq_tpu",
  )(q_offset, q, k, v, q_seg, kv_seg, do, lse, delta)

  # Grid (B, Hkv, key block, group head, query block): the last two axes reduce into dK/dV scratch.
  q_i = (lambda off, bi, i, j: jnp.maximum(i, _q_lo(off[bi], j, bq, bk, nq))) if causal else (
      lambda off, bi, i, j: i)
  q_block = pl.BlockSpec((None, None, bq, d), lambda bi, h, j, gi, i, off: (bi, h * g + gi, q_i(off, bi, i, j), 0))
  row = pl.BlockSpec((None, None, bq, 1), lambda bi, h, j, gi, i, off: (bi, h * g + gi, q_i(off, bi, i, j), 0))
  kv_block = pl.BlockSpec((None, None, bk, d), lambda bi, h, j, gi, i, off: (bi, h, j, 0))
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, scale=scale, causal=causal, bq=bq, bk=bk, nq=nq, groups=g),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=1, grid=(b, hkv, nk, g, nq),
          in_specs=[q_block, kv_block, kv_block,
                    pl.BlockSpec((None, bq, 1), lambda bi, h, j, gi, i, off: (bi, q_i(off, bi, i, j), 0)),
                    pl.BlockSpec((None, 1, bk), lambda bi, h, j, gi, i, off: (bi, 0, j)),
                    q_block, row, row],
          out_specs=[kv_block, kv_block],
          scratch_shapes=[pltpu.VMEM((bk, d), jnp.float32), pltpu.VMEM((bk, d), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      compiler_params=_params(interpret, ("parallel", "parallel", "parallel", "arbitrary", "arbitrary")),
      interpret=interpret, name="flash_attention_dkv_tpu",
  )(q_offset, q, k, v, q_seg, kv_seg, do, lse, delta)
  return dq, dk, dv
