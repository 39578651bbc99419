"""Small building blocks shared by the vision tower and the text decoder.

Parameter names mirror the Hugging Face checkpoint (``weight``, ``bias``) except Linear's ``kernel``,
which is stored [in, out] (the transpose of PyTorch's [out, in]); params.py maps between them.
Every module computes in the dtype of its parameters, as transformers does.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec

from taskmem_jax import sharding as shd
from taskmem_jax.kernels.decode_attention import decode_attention
from taskmem_jax.kernels.flash_attention import flash_attention, resolve_impl

Array = jax.Array
_INIT_STD = 0.02


# Per-layer rematerialisation (TextConfig.remat / VisionConfig.remat; training only, the sampler's cached
# forward never remats): "none" keeps every activation for the backward; "full" keeps each layer's input
# and recomputes the rest; "dots" also keeps the matmul outputs without a batch dimension (the weights'
# products), so only the cheap elementwise work and attention are recomputed.
REMAT_POLICIES = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def remat_call(module: nnx.Module, x: Array, fn, policy: str) -> Array:
  """fn(module, x) under jax.checkpoint with REMAT_POLICIES[policy]: the backward keeps x (and what the policy
  saves) and recomputes the rest. The module goes in as its split state (a pure function, so parameters
  traced at any level work: the DPO loss merges a steer traced under grad with a backbone closed over)."""
  graphdef, state = nnx.split(module)
  run = jax.checkpoint(lambda state, x: fn(nnx.merge(graphdef, state), x), policy=REMAT_POLICIES[policy])
  return run(state, x)


class Linear(nnx.Module):
  """y = x @ kernel + bias. kernel: [in, out]."""

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool, dtype, rngs: nnx.Rngs):
    self.kernel = nnx.Param(jax.random.normal(rngs.params(), (in_features, out_features), dtype) * _INIT_STD)
    self.bias = nnx.Param(jnp.zeros((out_features,), dtype)) if use_bias else None

  def __call__(self, x: Array) -> Array:
    y = matmul(x.astype(self.kernel.dtype), self.kernel[...])
    return y + self.bias[...] if self.bias is not None else y


def matmul(x: Array, w: Array) -> Array:
  """x @ w accumulated in fp32 and rounded once to the inputs' dtype, as torch's bf16 matmul does.

  Asking XLA for an fp32 result is also faster on CPU: its plain bf16 dot is ~2.5x slower.
  """
  return jnp.matmul(x, w, preferred_element_type=jnp.float32).astype(x.dtype)


class Embed(nnx.Module):
  """Lookup table. weight: [num_embeddings, features]."""

  def __init__(self, num_embeddings: int, features: int, *, dtype, rngs: nnx.Rngs):
    self.weight = nnx.Param(jax.random.normal(rngs.params(), (num_embeddings, features), dtype) * _INIT_STD)

  def __call__(self, ids: Array) -> Array:
    return jnp.take(self.weight[...], ids, axis=0)


class RMSNorm(nnx.Module):
  """Qwen3 RMSNorm: normalise in fp32, cast back to the input dtype, then multiply by plain ``weight``."""

  def __init__(self, features: int, *, eps: float, dtype):
    self.weight = nnx.Param(jnp.ones((features,), dtype))
    self.eps = eps

  def __call__(self, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...] * y.astype(x.dtype)


class LayerNorm(nnx.Module):
  """LayerNorm with bias; statistics in fp32 (as torch does for bf16), output in the input dtype."""

  def __init__(self, features: int, *, eps: float, dtype):
    self.weight = nnx.Param(jnp.ones((features,), dtype))
    self.bias = nnx.Param(jnp.zeros((features,), dtype))
    self.eps = eps

  def __call__(self, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


def rotate_half(x: Array) -> Array:
  half = x.shape[-1] // 2
  return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["visible"], meta_fields=["first_slot"])
@dataclasses.dataclass(frozen=True)
class CausalMask:
  """A [B, L, S] visibility mask known to be causal: the L queries sit at the static slots first_slot.. of
  the S keys, and a key at a slot after a query's own is never visible to it. Lets dot_product_attention
  skip, per block of queries, the keys after the block's last slot."""
  visible: Array
  first_slot: int


# Long prompts (a prefill of a 50-s window is ~2k tokens): query blocks of this many rows, each reading only the
# keys up to its last slot, when L >= 2 * ATTENTION_BLOCK. On a 2-core CPU at L = 2239 (8 heads of 64) this takes
# the attention of one layer from 0.34 s to 0.11 s: the full [L, S] scores no longer go through memory, and the
# causal half is skipped. Blocks of 128 are 20% faster again but compile slower.
ATTENTION_BLOCK = 256


def _attend(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
  b, l, hq, d = q.shape
  hkv = k.shape[2]
  qg = q.reshape(b, l, hkv, hq // hkv, d)
  scores = jnp.einsum("blhgd,bshd->bhgls", qg, k, preferred_element_type=jnp.float32) * scale
  scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhgls,bshd->blhgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, l, hq, d)


def dot_product_attention(q: Array, k: Array, v: Array, mask, scale: float) -> Array:
  """Grouped-query attention without materialising repeated K/V.

  q: [B, L, Hq, D]; k, v: [B, S, Hkv, D]; mask: [B, L, S] bool (True = attend), or a CausalMask of one.
  Returns [B, L, Hq, D]. Query head i reads KV head i // (Hq/Hkv), as transformers' repeat_kv does. Scores
  and softmax in fp32. A fully masked row (a left-padding query) gets uniform weights over all S keys, as
  transformers' finite mask gives.
  """
  b, l, hq, d = q.shape
  if not isinstance(mask, CausalMask) or l < 2 * ATTENTION_BLOCK:
    mask = mask.visible if isinstance(mask, CausalMask) else mask
    return _attend(q, k, v, mask, scale).astype(q.dtype)
  visible, s, hkv = mask.visible, k.shape[1], k.shape[2]
  # Heads first, once: each block's two products are then plain batched matmuls (0.15 -> 0.11 s per layer).
  qt = q.reshape(b, l, hkv, hq // hkv, d).transpose(0, 2, 3, 1, 4)  # [B, Hkv, G, L, D]
  kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, Hkv, S, D]
  blocks = []
  for start in range(0, l, ATTENTION_BLOCK):
    stop = min(start + ATTENTION_BLOCK, l)
    keys = min(mask.first_slot + stop, s)  # later keys are invisible to every query of the block
    scores = jnp.einsum("bhgld,bhsd->bhgls", qt[:, :, :, start:stop], kt[:, :, :keys],
                        preferred_element_type=jnp.float32) * scale
    scores = jnp.where(visible[:, None, None, start:stop, :keys], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    blocks.append(jnp.einsum("bhgls,bhsd->bhgld", probs, vt[:, :, :keys], preferred_element_type=jnp.float32))
  out = jnp.concatenate(blocks, axis=3).transpose(0, 3, 1, 2, 4).reshape(b, l, hq, d)
  # A row with no visible key: uniform weights over all S keys, i.e. the mean of V (what the unblocked path gives).
  uniform = jnp.repeat(v.astype(jnp.float32).mean(axis=1), hq // k.shape[2], axis=1)  # [B, Hq, D]
  out = jnp.where(visible.any(-1)[:, :, None, None], out, uniform[:, None])
  return out.astype(q.dtype)


# --- attention_impl = "pallas" / "chunked": the ops in taskmem_jax/kernels (flash and decode attention) ---

def resolve_attention_impl(impl: str) -> str:
  """A config's attention_impl -> "xla", "pallas" or "chunked". "auto" is pallas on a GPU or TPU, xla on CPU.
  "pallas" on a CPU runs the kernels in interpret mode; "chunked" is flash attention in plain XLA
  (kernels/flash_attention/xla_chunked.py: memory O(L), not O(L x S), anywhere)."""
  return resolve_impl(impl)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["kv_valid", "q_offset"], meta_fields=["causal"])
@dataclasses.dataclass(frozen=True)
class KernelMask:
  """The structure of a [B, L, S] mask, for the kernels: key j is visible to query i when kv_valid[b, j]
  and, if causal, j <= q_offset + i. kv_valid: [B, S] bool; q_offset: the slot of query 0 (int or traced).
  A pytree whose ``causal`` flag stays static under jit."""
  kv_valid: Array
  q_offset: Array | int = 0
  causal: bool = False

  def dense(self, l: int) -> Array:
    """The same mask as [B, L, S] bool (what dot_product_attention takes)."""
    mask = jnp.broadcast_to(self.kv_valid[:, None, :], (self.kv_valid.shape[0], l, self.kv_valid.shape[1]))
    if self.causal:
      mask &= jnp.arange(self.kv_valid.shape[1])[None, None, :] <= self.q_offset + jnp.arange(l)[None, :, None]
    return mask


def kernel_attention(q: Array, k: Array, v: Array, mask: KernelMask, scale: float, impl: str = "pallas") -> Array:
  """dot_product_attention through taskmem_jax/kernels (interpret mode off the GPU). Shapes as
  dot_product_attention; impl "pallas" (the kernels) or "chunked" (flash attention in plain XLA).

  The same visibility, except that a query which sees no key (a left-padding slot) gets zeros instead
  of the XLA path's uniform average; nothing downstream reads those rows. One causal query over a
  cache (decode) goes to the split-K decode kernel with length q_offset + 1.

  Under a mesh (the context mesh of jax.set_mesh, which sharding.mesh_context enters for every jitted
  entry point whose arrays live on one), the op runs inside jax.shard_map: rows (the batch, or the vision
  tower's frames) split over the batch axes and heads over "tensor" as sharding.attention_specs lays them
  out, so each device calls the kernel on its own block. Mosaic and Triton kernels cannot be partitioned
  by the compiler; this is what lets them run sharded.
  """
  b, l = q.shape[:2]
  offset = jnp.broadcast_to(jnp.asarray(mask.q_offset, jnp.int32), (b,))
  causal = mask.causal
  if l == 1 and causal:
    def local(q, k, v, kv_valid, offset):
      return decode_attention(q[:, 0], k, v, offset + 1, kv_mask=kv_valid, scale=scale, impl=impl)[:, None]
  else:
    def local(q, k, v, kv_valid, offset):
      # Every query is segment 1 and valid keys are segment 1, so a query sees exactly the valid keys.
      return flash_attention(q, k, v, causal=causal, q_segment_ids=jnp.ones(q.shape[:2], jnp.int32),
                             kv_segment_ids=kv_valid.astype(jnp.int32), q_offset=offset, scale=scale, impl=impl)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return local(q, k, v, mask.kv_valid, offset)
  rows, heads = shd.attention_specs(mesh, b, q.shape[2], k.shape[2])
  qkv = PartitionSpec(rows, None, heads, None)
  return jax.shard_map(local, mesh=mesh, in_specs=(qkv, qkv, qkv, PartitionSpec(rows, None), PartitionSpec(rows)),
                       out_specs=qkv, check_vma=False)(q, k, v, mask.kv_valid, offset)
