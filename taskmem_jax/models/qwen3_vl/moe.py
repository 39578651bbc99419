"""Qwen3-VL-MoE sparse block: fp32 softmax router, top-k renormalised, experts via ``lax.ragged_dot``.

Token-expert assignments are sorted by expert so each expert's rows are contiguous, and the two
expert matmuls are grouped matmuls over those groups: work is proportional to tokens x top_k, never
to tokens x num_experts.
"""

from __future__ import annotations

import math

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
  """dispatch over blocks of MOE_CHUNK tokens (in_blocks): the same sums, with one block's routed copies alive
  at a time. Shorter inputs are one block."""
  return in_blocks(lambda x, w, e: dispatch(x, w, e, gate_up, down), MOE_CHUNK, x, weights, experts)


def dispatch(x: Array, weights: Array, experts: Array, gate_up: Array, down: Array) -> Array:
  """x: [T, H]; weights, experts: [T, k]; gate_up [E, H, 2I], down [E, I, H]. The T x k routed copies sorted by
  expert, two ragged_dots, weighted and scattered back: sum_k weights * expert_k(x), [T, H].

  An expert id equal to E means "held by another device" (expert parallelism): such copies sort last, fall in
  no group, and are masked out of the result; the ragged_dot rows past the last group are never read."""
  t, k = experts.shape
  e = gate_up.shape[0]
  flat_expert = experts.reshape(-1)
  order = jnp.argsort(flat_expert, stable=True)
  token_of = order // k
  group_sizes = jnp.bincount(flat_expert, length=e + 1)[:e].astype(jnp.int32)
  here = (flat_expert[order] < e)[:, None]
  rows = jnp.where(here, x[token_of], 0)
  dot = lambda a, w: jax.lax.ragged_dot(a, w, group_sizes, preferred_element_type=jnp.float32).astype(x.dtype)
  gate, up = jnp.split(dot(rows, gate_up), 2, axis=-1)
  out = dot(jax.nn.silu(gate) * up, down)
  out = jnp.where(here, out, 0) * weights.reshape(-1)[order][:, None]
  return jnp.zeros_like(x).at[token_of].add(out)


def in_blocks(fn, block: int, *arrays: Array) -> Array:
  """fn over blocks of ``block`` rows of the arrays (lax.map, each block under jax.checkpoint so only one
  block's intermediates live, in the forward and in the backward), concatenated: [T, ...]. Padding rows are
  zeros (weight 0: they add nothing) and are cut off."""
  t = arrays[0].shape[0]
  if t <= block:
    return fn(*arrays)
  n = -(-t // block)
  pad = n * block - t
  blocks = lambda a: jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)).reshape((n, block) + a.shape[1:])
  out = jax.lax.map(jax.checkpoint(lambda args: fn(*args)), tuple(blocks(a) for a in arrays))
  return out.reshape((n * block,) + out.shape[2:])[:t]


def expert_parallel_dispatch(x: Array, weights: Array, experts: Array, gate_up: Array, down: Array, *,
                             expert_axes: tuple, gathered: tuple, replicated: tuple) -> Array:
  """Inside shard_map: this device's share of the MoE for its tokens x [T, H] (weights, experts [T, k]), with
  gate_up [E_l, H, 2I] / down [E_l, I, H] the E_l experts it holds (split over ``expert_axes``).

  Tokens split over an expert axis (``gathered``: the expert preset's batch) are all-gathered over it in
  blocks, each device applies its own experts to every gathered copy routed to them, and the partial sums go
  back by reduce-scatter. Over an expert axis the tokens are replicated on (``replicated``: "tensor" in
  fsdp_tensor) nothing moves but the partial sums (psum). No device holds another's experts or their
  gradients."""
  e_local = gate_up.shape[0]
  first = jax.lax.axis_index(expert_axes) * e_local
  span = math.prod(jax.lax.axis_size(a) for a in gathered) if gathered else 1

  def block(x, weights, experts):
    if gathered:
      x, weights, experts = (jax.lax.all_gather(a, gathered, axis=0, tiled=True) for a in (x, weights, experts))
    local = experts - first
    local = jnp.where((local >= 0) & (local < e_local), local, e_local)
    out = dispatch(x, weights, local, gate_up, down)
    return jax.lax.psum_scatter(out, gathered, scatter_dimension=0, tiled=True) if gathered else out

  out = in_blocks(block, max(1, MOE_CHUNK // span), x, weights, experts)
  return jax.lax.psum(out, replicated) if replicated else out


class SparseMoeBlock(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
    self.top_k = cfg.num_experts_per_tok
    self.gate = Linear(cfg.hidden_size, cfg.num_experts, use_bias=False, dtype=dtype, rngs=rngs)
    self.experts = Experts(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    """x: [B, L, H] -> [B, L, H].

    Under a mesh (the context mesh, as for the attention kernels) the MoE runs inside jax.shard_map. Left to
    the partitioner, the argsort over all B x L x k copies cannot stay split, and every device would dispatch
    the whole global batch (the TPU compiler's 3x-the-plan bytes of results/aot_2026-12-07). The expert
    weights enter as they are laid out (sharding.MOE_WEIGHT_RULES, which agree with every preset):
    - experts split over mesh axes (expert preset: "expert"; fsdp_tensor: "tensor"): expert parallelism
      (expert_parallel_dispatch), each device computing only its own experts;
    - experts whole (fsdp): each device dispatches its own rows, the weights gathered inside the shard_map
      (gather_expert_weights), so their gradients leave the layer reduce-scattered.
    Either way no device keeps a whole copy of every expert, or its gradient, past the layer."""
    flat = x.reshape(-1, x.shape[-1])
    weights, experts = route(self.gate(flat), self.top_k)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
      return self.experts(flat, weights, experts).reshape(x.shape)
    k = self.top_k
    rows = shd.attention_specs(mesh, x.shape[0], 1, 1)[0]
    gate_up, down = self.experts.gate_up_proj[...], self.experts.down_proj[...]
    gate_up_spec = shd.spec_for(("experts", "embed", "expert_mlp"), gate_up.shape, mesh, shd.MOE_WEIGHT_RULES)
    down_spec = shd.spec_for(("experts", "expert_mlp", "embed"), down.shape, mesh, shd.MOE_WEIGHT_RULES)
    as_tuple = lambda entry: () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    expert_axes, row_axes = as_tuple(tuple(gate_up_spec)[0] if len(gate_up_spec) else None), as_tuple(rows)

    def local(x, weights, experts, gate_up, down):
      b, l, h = x.shape
      x, weights, experts = x.reshape(b * l, h), weights.reshape(b * l, k), experts.reshape(b * l, k)
      whole_dims = lambda w, spec: gather_expert_weights(w, PartitionSpec(None, *tuple(spec)[1:]))
      gate_up, down = whole_dims(gate_up, gate_up_spec), whole_dims(down, down_spec)
      if expert_axes:
        out = expert_parallel_dispatch(x, weights, experts, gate_up, down, expert_axes=expert_axes,
                                       gathered=tuple(a for a in expert_axes if a in row_axes),
                                       replicated=tuple(a for a in expert_axes if a not in row_axes))
      else:
        out = chunked_dispatch(x, weights, experts, gate_up, down)
      return out.reshape(b, l, h)

    row = PartitionSpec(rows, None, None)
    # check_vma=False: all_gather's result is typed as varying over the gathered axes, though every device of
    # a row shard then computes the same output; tests/test_kernels_mesh.py checks values and gradients.
    return jax.shard_map(local, mesh=mesh, in_specs=(row, row, row, gate_up_spec, down_spec), out_specs=row,
                         check_vma=False)(x, weights.reshape(x.shape[:2] + (k,)),
                                          experts.reshape(x.shape[:2] + (k,)), gate_up, down)


def gather_expert_weights(w: Array, spec: PartitionSpec) -> Array:
  """Inside shard_map: the whole of an expert weight from its shard laid out by ``spec`` (one tiled all_gather
  per split dimension). The fused gate/up columns must be whole on each device: split over "tensor", one
  device would hold gate columns and another the matching up columns."""
  for dim, axes in enumerate(spec):
    if axes is not None:
      w = jax.lax.all_gather(w, axes, axis=dim, tiled=True)
  return w
