"""Flash attention in plain XLA: query blocks x key blocks with an online softmax, and a recomputing backward.

The third backend beside pallas_gpu.py and pallas_tpu.py, for where no kernel runs (CPU, or a fallback on an
accelerator): its memory does not grow with L x S. The forward keeps one [B, Hkv, G, bq, bk] block of scores
at a time and saves only the output and the log-sum-exp [B, Hkv, G, L]; the backward recomputes each block's
probabilities, first per query block for dQ, then per key block for dK/dV (so neither pass scatters).
Blocks that a causal mask hides wholly are computed and masked (the offset may be traced), which costs
up to 2x the causal FLOPs but no memory.

Same contract as the kernels (api.py pads and calls these inside one jax.custom_vjp): padded inputs
q [B, L, Hq, D], k/v [B, S, Hkv, D], segment ids q_seg [B, L] / kv_seg [B, S] (padding -2 / -1, matching
nothing), q_offset [B]; L a multiple of block_q, S of block_k. Natural-log softmax in fp32, probabilities
cast to v.dtype for the PV product, one cast of the output. A query that sees no key outputs zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def _blocks(x: Array, axis: int, size: int) -> Array:
  """Split ``axis`` into [n, size] and move n to the front (the scan axis)."""
  shape = x.shape[:axis] + (x.shape[axis] // size, size) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def _mask(q_seg, kv_seg, q_pos, k_pos, causal: bool) -> Array:
  """[B, bq], [B, bk] segment ids and slots -> [B, 1, 1, bq, bk] visibility."""
  mask = q_seg[:, :, None] == kv_seg[:, None, :]
  if causal:
    mask &= k_pos[:, None, :] <= q_pos[:, :, None]
  return mask[:, None, None]


def _layout(q, k, v):
  """q [B, L, Hq, D] -> [B, Hkv, G, L, D]; k, v [B, S, Hkv, D] -> [B, Hkv, S, D]."""
  b, l, hq, d = q.shape
  hkv = k.shape[2]
  return (q.reshape(b, l, hkv, hq // hkv, d).transpose(0, 2, 3, 1, 4), k.transpose(0, 2, 1, 3),
          v.transpose(0, 2, 1, 3))


def _unlayout(x, hq: int):
  """[B, Hkv, G, L, D] -> [B, L, Hq, D]."""
  b, _, _, l, d = x.shape
  return x.transpose(0, 3, 1, 2, 4).reshape(b, l, hq, d)


def _positions(q_offset, n: int, size: int, b: int):
  """Slots of each block's rows: [n, B, size]."""
  slots = jnp.arange(n * size, dtype=jnp.int32).reshape(n, 1, size)
  return jnp.broadcast_to(slots, (n, b, size)) + q_offset[None, :, None]


def forward(q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array, q_offset: Array, *, scale: float,
            causal: bool, block_q: int, block_k: int, interpret: bool = False) -> tuple[Array, Array]:
  """-> (out [B, L, Hq, D] in q.dtype, lse [B, Hkv, G, L] fp32; +inf on rows that see no key)."""
  del interpret  # plain XLA: nothing to interpret
  b, l, hq, _ = q.shape
  s = k.shape[1]
  qt, kt, vt = _layout(q, k, v)
  k_blocks, v_blocks = _blocks(kt, 2, block_k), _blocks(vt, 2, block_k)  # [nk, B, Hkv, bk, D]
  kseg_blocks = _blocks(kv_seg, 1, block_k)  # [nk, B, bk]
  k_pos = _positions(jnp.zeros((b,), jnp.int32), s // block_k, block_k, b)

  def one_query_block(args):
    q_blk, qseg, q_pos = args  # [B, Hkv, G, bq, D], [B, bq], [B, bq]

    def step(carry, kv):
      m, lsum, acc = carry
      k_blk, v_blk, kseg, kpos = kv
      scores = jnp.einsum("bhgqd,bhkd->bhgqk", q_blk, k_blk, preferred_element_type=jnp.float32) * scale
      visible = _mask(qseg, kseg, q_pos, kpos, causal)
      scores = jnp.where(visible, scores, -jnp.inf)
      m_new = jnp.maximum(m, scores.max(-1))
      safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
      p = jnp.where(visible, jnp.exp(scores - safe[..., None]), 0.0)
      rescale = jnp.where(jnp.isfinite(m), jnp.exp(m - safe), 0.0)
      acc = acc * rescale[..., None] + jnp.einsum("bhgqk,bhkd->bhgqd", p.astype(v_blk.dtype), v_blk,
                                                  preferred_element_type=jnp.float32)
      return (m_new, lsum * rescale + p.sum(-1), acc), None

    shape = q_blk.shape[:-1]
    init = (jnp.full(shape, -jnp.inf, jnp.float32), jnp.zeros(shape, jnp.float32),
            jnp.zeros(q_blk.shape, jnp.float32))
    (m, lsum, acc), _ = lax.scan(step, init, (k_blocks, v_blocks, kseg_blocks, k_pos))
    empty = lsum == 0.0
    out = acc / jnp.where(empty, 1.0, lsum)[..., None]
    return out.astype(q.dtype), jnp.where(empty, jnp.inf, m + jnp.log(jnp.where(empty, 1.0, lsum)))

  out, lse = lax.map(one_query_block, (_blocks(qt, 3, block_q), _blocks(q_seg, 1, block_q),
                                       _positions(q_offset, l // block_q, block_q, b)))
  # [nq, B, Hkv, G, bq, (D)] -> [B, Hkv, G, L, (D)]
  out = jnp.moveaxis(out, 0, 3).reshape(qt.shape)
  lse = jnp.moveaxis(lse, 0, 3).reshape(qt.shape[:-1])
  return _unlayout(out, hq), lse


def backward(q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array, q_offset: Array, out: Array, lse: Array,
             do: Array, *, scale: float, causal: bool, block_q: int, block_k: int,
             interpret: bool = False) -> tuple[Array, Array, Array]:
  """The forward's out and lse, dout [B, L, Hq, D] -> (dq, dk, dv) in the inputs' dtypes."""
  del interpret
  b, l, hq, _ = q.shape
  s = k.shape[1]
  qt, kt, vt = _layout(q, k, v)
  dot = _layout(do, k, v)[0]
  delta = jnp.sum(dot.astype(jnp.float32) * _layout(out, k, v)[0].astype(jnp.float32), -1)  # [B, Hkv, G, L]
  q_pos_all = _positions(q_offset, l // block_q, block_q, b)
  k_pos_all = _positions(jnp.zeros((b,), jnp.int32), s // block_k, block_k, b)
  q_parts = (_blocks(qt, 3, block_q), _blocks(dot, 3, block_q), _blocks(lse, 3, block_q),
             _blocks(delta, 3, block_q), _blocks(q_seg, 1, block_q), q_pos_all)
  k_parts = (_blocks(kt, 2, block_k), _blocks(vt, 2, block_k), _blocks(kv_seg, 1, block_k), k_pos_all)

  def probs(q_blk, k_blk, lse_blk, qseg, kseg, qpos, kpos):
    scores = jnp.einsum("bhgqd,bhkd->bhgqk", q_blk, k_blk, preferred_element_type=jnp.float32) * scale
    return jnp.where(_mask(qseg, kseg, qpos, kpos, causal), jnp.exp(scores - lse_blk[..., None]), 0.0)

  def grad_scores(p, do_blk, v_blk, delta_blk):
    dp = jnp.einsum("bhgqd,bhkd->bhgqk", do_blk, v_blk, preferred_element_type=jnp.float32)
    return p * (dp - delta_blk[..., None])

  def dq_block(args):
    q_blk, do_blk, lse_blk, delta_blk, qseg, qpos = args

    def step(dq, kv):
      k_blk, v_blk, kseg, kpos = kv
      p = probs(q_blk, k_blk, lse_blk, qseg, kseg, qpos, kpos)
      ds = grad_scores(p, do_blk, v_blk, delta_blk)
      return dq + jnp.einsum("bhgqk,bhkd->bhgqd", ds.astype(k_blk.dtype), k_blk,
                             preferred_element_type=jnp.float32) * scale, None

    dq, _ = lax.scan(step, jnp.zeros(q_blk.shape, jnp.float32), k_parts)
    return dq.astype(q.dtype)

  def dkv_block(args):
    k_blk, v_blk, kseg, kpos = args

    def step(carry, qs):
      dk, dv = carry
      q_blk, do_blk, lse_blk, delta_blk, qseg, qpos = qs
      p = probs(q_blk, k_blk, lse_blk, qseg, kseg, qpos, kpos)
      dv = dv + jnp.einsum("bhgqk,bhgqd->bhkd", p.astype(do_blk.dtype), do_blk, preferred_element_type=jnp.float32)
      ds = grad_scores(p, do_blk, v_blk, delta_blk)
      dk = dk + jnp.einsum("bhgqk,bhgqd->bhkd", ds.astype(q_blk.dtype), q_blk,
                           preferred_element_type=jnp.float32) * scale
      return (dk, dv), None

    zeros = jnp.zeros(k_blk.shape, jnp.float32)
    (dk, dv), _ = lax.scan(step, (zeros, zeros), q_parts)
    return dk.astype(k.dtype), dv.astype(v.dtype)

  dq = lax.map(dq_block, q_parts)  # [nq, B, Hkv, G, bq, D]
  dq = _unlayout(jnp.moveaxis(dq, 0, 3).reshape(qt.shape), hq)
  dk, dv = lax.map(dkv_block, k_parts)  # [nk, B, Hkv, bk, D]
  to_bshd = lambda x: jnp.moveaxis(x, 0, 2).reshape(kt.shape).transpose(0, 2, 1, 3)
  return dq, to_bshd(dk), to_bshd(dv)
