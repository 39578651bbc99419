"""Qwen3-VL-MoE sparse block: fp32 softmax router, top-k renormalised, experts via ``lax.ragged_dot``.

Token-expert assignments are sorted by expert so each expert's rows are contiguous, and the two
expert matmuls are grouped matmuls over those groups: work is proportional to tokens x top_k, never
to tokens x num_experts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

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
    t, k = experts.shape
    num_experts = self.gate_up_proj.shape[0]
    flat_expert = experts.reshape(-1)
    order = jnp.argsort(flat_expert, stable=True)
    token_of = order // k
    group_sizes = jnp.bincount(flat_expert, length=num_experts).astype(jnp.int32)
    rows = x[token_of]
    dot = lambda a, w: jax.lax.ragged_dot(a, w, group_sizes, preferred_element_type=jnp.float32).astype(x.dtype)
    gate, up = jnp.split(dot(rows, self.gate_up_proj[...]), 2, axis=-1)
    out = dot(jax.nn.silu(gate) * up, self.down_proj[...])
    out = out * weights.reshape(-1)[order][:, None]
    return jnp.zeros_like(x).at[token_of].add(out)


class SparseMoeBlock(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
    self.top_k = cfg.num_experts_per_tok
    self.gate = Linear(cfg.hidden_size, cfg.num_experts, use_bias=False, dtype=dtype, rngs=rngs)
    self.experts = Experts(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    """x: [B, L, H] -> [B, L, H]."""
    flat = x.reshape(-1, x.shape[-1])
    weights, experts = route(self.gate(flat), self.top_k)
    return self.experts(flat, weights, experts).reshape(x.shape)
