"""Qwen3-VL text decoder: q/k-normed GQA with interleaved MRoPE, SwiGLU or MoE MLP, DeepStack injection."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from taskmem_jax.models.qwen3_vl.config import TextConfig
from taskmem_jax.models.qwen3_vl.layers import (CausalMask, Embed, KernelMask, Linear, RMSNorm, dot_product_attention,
                                                kernel_attention, remat_call, resolve_attention_impl, rotate_half)
from taskmem_jax.models.qwen3_vl.moe import SparseMoeBlock

Array = jax.Array


class KVCache(NamedTuple):
  """One decoder layer's cache. k (after q/k-norm and RoPE), v: [B, S, Hkv, hd]."""
  k: Array
  v: Array


def text_rotary(position_ids: Array, cfg: TextConfig, dtype) -> tuple[Array, Array]:
  """position_ids: [3, B, L] (t, h, w) -> cos, sin [B, L, head_dim] in ``dtype``.

  Angles in fp32, then cast to the activation dtype before the rotation (as transformers does).
  """
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
  pos = jnp.take(position_ids, jnp.asarray(cfg.mrope_axis()), axis=0)  # [hd/2, B, L]
  angles = jnp.moveaxis(pos.astype(jnp.float32), 0, -1) * inv
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


class Attention(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
    self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    self.attention_impl = cfg.attention_impl
    h = cfg.hidden_size
    self.q_proj = Linear(h, self.num_heads * self.head_dim, use_bias=False, dtype=dtype, rngs=rngs)
    self.k_proj = Linear(h, self.num_kv_heads * self.head_dim, use_bias=False, dtype=dtype, rngs=rngs)
    self.v_proj = Linear(h, self.num_kv_heads * self.head_dim, use_bias=False, dtype=dtype, rngs=rngs)
    self.o_proj = Linear(self.num_heads * self.head_dim, h, use_bias=False, dtype=dtype, rngs=rngs)
    self.q_norm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps, dtype=dtype)
    self.k_norm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps, dtype=dtype)

  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array, cache: KVCache | None = None,
               cache_index: Array | int = 0) -> tuple[Array, KVCache | None]:
    """x: [B, L, H]; cos, sin: [B, L, hd]; mask: [B, L, S] bool over the keys, or a KernelMask
    (attention_impl "pallas": the same visibility, computed by the kernels in kernels/).

    Without a cache S = L. With one (k, v: [B, S, Hkv, hd]) the new keys (after q/k-norm and RoPE)
    and values are written at slots cache_index .. cache_index + L - 1 and attention reads the whole
    cache. Returns ([B, L, H], the updated cache or None).
    """
    b, l, _ = x.shape
    q = self.q_norm(self.q_proj(x).reshape(b, l, self.num_heads, self.head_dim))
    k = self.k_norm(self.k_proj(x).reshape(b, l, self.num_kv_heads, self.head_dim))
    v = self.v_proj(x).reshape(b, l, self.num_kv_heads, self.head_dim)
    cos, sin = cos[:, :, None], sin[:, :, None]
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    if cache is not None:
      start = (0, cache_index, 0, 0)
      cache = KVCache(jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), start),
                      jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), start))
      k, v = cache.k, cache.v
    if isinstance(mask, KernelMask):
      out = kernel_attention(q, k, v, mask, self.head_dim**-0.5, resolve_attention_impl(self.attention_impl))
    else:
      out = dot_product_attention(q, k, v, mask, self.head_dim**-0.5)
    return self.o_proj(out.reshape(b, l, -1)), cache


class MLP(nnx.Module):

  def __init__(self, hidden: int, intermediate: int, *, dtype, rngs: nnx.Rngs):
    self.gate_proj = Linear(hidden, intermediate, use_bias=False, dtype=dtype, rngs=rngs)
    self.up_proj = Linear(hidden, intermediate, use_bias=False, dtype=dtype, rngs=rngs)
    self.down_proj = Linear(intermediate, hidden, use_bias=False, dtype=dtype, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):

  def __init__(self, cfg: TextConfig, layer: int, *, dtype, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
    self.self_attn = Attention(cfg, dtype=dtype, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
    if cfg.is_moe_layer(layer):
      self.mlp = SparseMoeBlock(cfg, dtype=dtype, rngs=rngs)
    else:
      self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, dtype=dtype, rngs=rngs)

  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array, cache: KVCache | None = None,
               cache_index: Array | int = 0) -> tuple[Array, KVCache | None]:
    attn, cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, cache_index)
    x = x + attn
    return x + self.mlp(self.post_attention_layernorm(x)), cache


def remat_layer(layer: DecoderLayer, x: Array, cos: Array, sin: Array, mask, policy: str) -> Array:
  """layer(x) under jax.checkpoint: its backward keeps x (and, with policy "dots", the matmul outputs)
  instead of everything the layer computed. The other inputs are closed over: they are the same for
  every layer and are kept once."""
  return remat_call(layer, x, lambda layer, x: layer(x, cos, sin, mask)[0], policy)


class SteerParam(nnx.Param):
  """A Phase-Two steer vector (taskmem_jax/adapters/steer.py): trainable where the backbone is frozen; in the
  Hugging Face checkpoint only in the official Phase-Two layout (params.save_pretrained(steer=True))."""


OFFICIAL_STEER_LAYER, OFFICIAL_DEPTH = 22, 48


def default_steer_layers(num_layers: int) -> tuple[int, ...]:
  """(22,) for 48 layers (the released checkpoint's); the same relative depth round(22 / 48 * L) otherwise."""
  return (min(num_layers - 1, round(OFFICIAL_STEER_LAYER * num_layers / OFFICIAL_DEPTH)),)


class TextModel(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, i, dtype=dtype, rngs=rngs) for i in range(cfg.num_hidden_layers)])
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)

  def __call__(self, embeds: Array, position_ids: Array, attention_mask: Array, visual_mask: Array,
               deepstack: list[Array], cache: list[KVCache] | None = None,
               cache_index: Array | int = 0) -> tuple[Array, list[KVCache] | None]:
    """Decoder stack over input embeddings.

    embeds: [B, L, H]; position_ids: [3, B, L]; visual_mask: [B, L] bool (vision placeholder
    positions); deepstack: list of [B, L, H] features, zero off the visual positions, added after
    layers 0..len-1.
    Without a cache, attention_mask is [B, L] (1 = real token) and attention is causal over L.
    With a cache (one KVCache per layer, [B, S, Hkv, hd]), the L new tokens sit at slots
    cache_index..cache_index+L-1, attention_mask is [B, S] (1 = a real token occupies or will occupy
    that slot) and slot j is visible to the token at slot p when j <= p.
    Returns (final-normed hidden [B, L, H], updated caches or None).
    """
    _, l, _ = embeds.shape
    cos, sin = text_rotary(position_ids, self.cfg, embeds.dtype)
    if resolve_attention_impl(self.cfg.attention_impl) != "xla":  # the kernels take the mask's structure
      mask = KernelMask(attention_mask.astype(bool), cache_index, causal=True)
    else:
      slots = attention_mask.shape[1]
      query_slot = cache_index + jnp.arange(l)
      causal = jnp.arange(slots)[None, :] <= query_slot[:, None]  # [L, S]
      mask = causal[None] & attention_mask.astype(bool)[:, None, :]
      if isinstance(cache_index, int):  # a static first slot: long prompts attend block by block
        mask = CausalMask(mask, cache_index)
    x = embeds
    new_cache = [] if cache is not None else None
    steer_at = {layer: k for k, layer in enumerate(getattr(self, "steer_layers", ()))}
    for i, layer in enumerate(self.layers):
      if cache is None and self.cfg.remat != "none":  # training: recompute the layer in its backward
        x = remat_layer(layer, x, cos, sin, mask, self.cfg.remat)
        layer_cache = None
      else:
        x, layer_cache = layer(x, cos, sin, mask, None if cache is None else cache[i], cache_index)
      if cache is not None:
        new_cache.append(layer_cache)
      if i < len(deepstack):
        x = jnp.where(visual_mask[..., None], x + deepstack[i].astype(x.dtype), x)
      if i in steer_at:  # the steer adapter (adapters/steer.py): every position of layer i's output
        x = x + self.steer[steer_at[i]].astype(x.dtype)
    return self.norm(x), new_cache
