"""Qwen3-VL-MoE sparse block: fp32 softmax router, top-k renormalised, experts via ``lax.ragged_dot``.

Token-expert assignments are sorted by expert so each expert's rows are contiguous, and the two
expert matmuls are grouped matmuls over those groups: work is proportional to tokens x top_k, never
to tokens x num_experts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec

from taskmem_jax import sharding as shd
from taskmem_jax.models.qwen3_vl.config import TextConfig
from taskmem_jax.models.qwen3_vl.layers import Linear

Array = jax.Array
_INIT_STD = 0.02


def route(router_logits: Array, top_k: int) -> tuple[Array, Array]:
  """router_logits: [T, E] -> (weights [T, k] in the logits dtype, expert ids [T, k] int32)."""
  probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
  top_p, top_e = jax.lax.top_k(probs, top_k)
  top_p = top_p / jnp.sum(top_p, axis=-1, keepdims=True)
  return top_p.astype(router_logits.dtype), top_e.astype(jnp.int32)


class Experts(nnx.Module):
  """Fused expert weights in the Hub layout: gate_up_proj [E, H, 2I] (gate first), down_proj [E, I, H]."""

  def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
    e, h, i = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
    self.gate_up_proj = nnx.Param(jax.random.normal(rngs.params(), (e, h, 2 * i), dtype) * _INIT_STD)
    self.down_proj = nnx.Param(jax.random.normal(rngs.params(), (e, i, h), dtype) * _INIT_STD)

  def __call__(self, x: Array, weights: Array, experts: Array) -> Array:
    """x: [T, H]; weights, experts: [T, k]. Returns sum_k weights * expert_k(x): [T, H]."""
    return chunked_dispatch(x, weights, experts, self.gate_up_proj[...], self.down_proj[...])


# Tokens per dispatch on a long prompt: the routed copies, their gate/up and down products (fp32 accumulations)
# of 98k tokens x 8 experts would be ~20 GiB on one device; in blocks of this many tokens, each recomputed in
# the backward, one block's are ~1.5 GiB (Qwen3-VL-30B-A3B: H 2048, I 768).
MOE_CHUNK = 8192


def chunked_dispatch(x: Array, weights: Array, experts: Array, gate_up: Array, down: Array) -> Array:
  """dispatch over blocks of MOE_CHUNK tokens (lax.map, each block under jax.checkpoint): the same sums, with
  one block's routed copies alive at a time. Shorter inputs are one block."""
  t, h = x.shape
  if t <= MOE_CHUNK:
    return dispatch(x, weights, experts, gate_up, down)
  n = -(-t // MOE_CHUNK)
  pad = n * MOE_CHUNK - t
  blocks = lambda a: jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)).reshape((n, MOE_CHUNK) + a.shape[1:])
  # Padding tokens go to expert 0 with weight 0: they add nothing, and are cut off below.
  body = jax.checkpoint(lambda args: dispatch(*args, gate_up, down))
  out = jax.lax.map(body, (blocks(x), blocks(weights), blocks(experts)))
  return out.reshape(n * MOE_CHUNK, h)[:t]


def dispatch(x: Array, weights: Array, experts: Array, gate_up: Array, down: Array) -> Array:
  """x: [T, H]; weights, experts: [T, k]; gate_up [E, H, 2I], down [E, I, H]. The T x k routed copies sorted by
  expert, two ragged_dots, weighted and scattered back: sum_k weights * expert_k(x), [T, H]."""
  t, k = experts.shape
  flat_expert = experts.reshape(-1)
  order = jnp.argsort(flat_expert, stable=True)
  token_of = order // k
  group_sizes = jnp.bincount(flat_expert, length=gate_up.shape[0]).astype(jnp.int32)
  rows = x[token_of]
  dot = lambda a, w: jax.lax.ragged_dot(a, w, group_sizes, preferred_element_type=jnp.float32).astype(x.dtype)
  gate, up = jnp.split(dot(rows, gate_up), 2, axis=-1)
  out = dot(jax.nn.silu(gate) * up, down)
  out = out * weights.reshape(-1)[order][:, None]
  return jnp.zeros_like(x).at[token_of].add(out)


class SparseMoeBlock(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
    self.top_k = cfg.num_experts_per_tok
    self.gate = Linear(cfg.hidden_size, cfg.num_experts, use_bias=False, dtype=dtype, rngs=rngs)
    self.experts = Experts(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    """x: [B, L, H] -> [B, L, H].

    Under a mesh (the context mesh, as for the attention kernels) the dispatch runs per batch shard inside
    jax.shard_map: each device sorts and multiplies only its own rows' routed copies. Left to the partitioner,
    the argsort over all B x L x k copies cannot stay split, and every device would dispatch the whole global
    batch (the TPU compiler's 3x-the-plan bytes of results/aot_2026-12-07). The expert weights enter each
    shard whole (gathered per layer, as FSDP gathers every weight per use)."""
    flat = x.reshape(-1, x.shape[-1])
    weights, experts = route(self.gate(flat), self.top_k)
    mesh = jax.sharding.get_abstract_mesh()
    rows = None if mesh.empty or mesh.size == 1 else shd.attention_specs(mesh, x.shape[0], 1, 1)[0]
    if rows is None:
      return self.experts(flat, weights, experts).reshape(x.shape)
    k = self.top_k
    gate_up, down = self.experts.gate_up_proj[...], self.experts.down_proj[...]

    def local(x, weights, experts, gate_up, down):
      b, l, h = x.shape
      out = chunked_dispatch(x.reshape(b * l, h), weights.reshape(b * l, k), experts.reshape(b * l, k), gate_up,
                             down)
      return out.reshape(b, l, h)

    row = PartitionSpec(rows, None, None)
    return jax.shard_map(local, mesh=mesh, in_specs=(row, row, row, PartitionSpec(), PartitionSpec()),
                         out_specs=row)(x, weights.reshape(x.shape[:2] + (k,)), experts.reshape(x.shape[:2] + (k,)),
                                        gate_up, down)
