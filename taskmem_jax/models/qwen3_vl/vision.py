"""Qwen3-VL vision tower: patch embedding, interpolated learned positions, 2-D rotary, per-frame
block-diagonal attention blocks, the 2x2 merger and the DeepStack mergers.

Input rows are 3-D patches in merge-block order; the per-patch metadata (positions.vision_metadata)
is computed on the host, so ``__call__`` is a pure function of fixed-shape arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from taskmem_jax.models.qwen3_vl.config import VisionConfig
from taskmem_jax.models.qwen3_vl.layers import (Embed, KernelMask, LayerNorm, Linear, dot_product_attention,
                                                kernel_attention, remat_call, resolve_attention_impl, rotate_half)
from taskmem_jax.models.qwen3_vl.positions import VisionMetadata

Array = jax.Array


def vision_rotary(rowcol: Array, cfg: VisionConfig) -> tuple[Array, Array]:
  """cos, sin [N, head_dim] fp32 for the axial 2-D rotary: angles [row*inv, col*inv] duplicated."""
  quarter = cfg.head_dim // 2
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, quarter, 2, dtype=jnp.float32) / quarter))
  rc = rowcol.astype(jnp.float32)
  angles = jnp.concatenate([rc[:, :1] * inv, rc[:, 1:] * inv], axis=-1)
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


class VisionAttention(nnx.Module):

  def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
    self.num_heads = cfg.num_heads
    self.attention_impl = cfg.attention_impl
    self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size, use_bias=True, dtype=dtype, rngs=rngs)
    self.proj = Linear(cfg.hidden_size, cfg.hidden_size, use_bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: Array, cos: Array, sin: Array, meta: VisionMetadata) -> Array:
    """x: [N, Dv]; cos, sin: [N, hd] fp32. Returns [N, Dv].

    Attention runs per frame: patches are gathered into [S frames, Lmax, ...] and padding keys are
    masked, so memory grows with S * Lmax^2, not N^2.
    """
    n, dv = x.shape
    hd = dv // self.num_heads
    q, k, v = jnp.moveaxis(self.qkv(x).reshape(n, 3, self.num_heads, hd), 1, 0)

    def rope(t):  # the whole rotation in fp32, cast back after
      t32 = t.astype(jnp.float32)
      return (t32 * cos[:, None] + rotate_half(t32) * sin[:, None]).astype(t.dtype)

    by_frame = lambda t: t[meta.frame_tokens]  # [S, Lmax, nh, hd]
    s, longest = meta.frame_tokens.shape
    impl = resolve_attention_impl(self.attention_impl)
    if impl != "xla":  # frames as rows; padding keys masked
      out = kernel_attention(by_frame(rope(q)), by_frame(rope(k)), by_frame(v),
                             KernelMask(meta.frame_valid.astype(bool)), hd**-0.5, impl)
    else:
      mask = jnp.broadcast_to(meta.frame_valid[:, None, :], (s, longest, longest))
      out = dot_product_attention(by_frame(rope(q)), by_frame(rope(k)), by_frame(v), mask, hd**-0.5)
    return self.proj(out.reshape(s * longest, dv)[meta.token_slot])


class VisionMLP(nnx.Module):

  def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
    self.approximate = cfg.hidden_act == "gelu_pytorch_tanh"
    self.linear_fc1 = Linear(cfg.hidden_size, cfg.intermediate_size, use_bias=True, dtype=dtype, rngs=rngs)
    self.linear_fc2 = Linear(cfg.intermediate_size, cfg.hidden_size, use_bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return self.linear_fc2(jax.nn.gelu(self.linear_fc1(x), approximate=self.approximate))


class VisionBlock(nnx.Module):

  def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
    self.norm1 = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype)
    self.norm2 = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype)
    self.attn = VisionAttention(cfg, dtype=dtype, rngs=rngs)
    self.mlp = VisionMLP(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x: Array, cos: Array, sin: Array, meta: VisionMetadata) -> Array:
    x = x + self.attn(self.norm1(x), cos, sin, meta)
    return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
  """Folds each 2x2 block of patches into one LLM token. Mergers use exact (erf) GELU.

  The main merger normalises each patch before folding; DeepStack mergers (postshuffle) fold first.
  """

  def __init__(self, cfg: VisionConfig, *, postshuffle: bool, dtype, rngs: nnx.Rngs):
    folded = cfg.hidden_size * cfg.spatial_merge_size**2
    self.postshuffle = postshuffle
    self.folded = folded
    self.norm = LayerNorm(folded if postshuffle else cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype)
    self.linear_fc1 = Linear(folded, folded, use_bias=True, dtype=dtype, rngs=rngs)
    self.linear_fc2 = Linear(folded, cfg.out_hidden_size, use_bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    """x: [N, Dv] -> [N/4, out_hidden]."""
    x = self.norm(x.reshape(-1, self.folded)) if self.postshuffle else self.norm(x).reshape(-1, self.folded)
    return self.linear_fc2(jax.nn.gelu(self.linear_fc1(x), approximate=False))


class VisionModel(nnx.Module):

  def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
    self.cfg = cfg
    # The Conv3d patch embedding (kernel = stride) is a Linear over flattened (C, T, P, P) patches.
    self.patch_embed = Linear(cfg.patch_dim, cfg.hidden_size, use_bias=True, dtype=dtype, rngs=rngs)
    self.pos_embed = Embed(cfg.num_position_embeddings, cfg.hidden_size, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([VisionBlock(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.depth)])
    self.merger = PatchMerger(cfg, postshuffle=False, dtype=dtype, rngs=rngs)
    self.deepstack_merger_list = nnx.List([
        PatchMerger(cfg, postshuffle=True, dtype=dtype, rngs=rngs) for _ in cfg.deepstack_visual_indexes])

  def __call__(self, pixel_values: Array, meta: VisionMetadata) -> tuple[Array, list[Array]]:
    """pixel_values: [N, C*T*P*P] -> (features [N/4, out_hidden], DeepStack features, each [N/4, out_hidden])."""
    dtype = self.patch_embed.kernel.dtype
    x = self.patch_embed(pixel_values.astype(dtype))
    table = self.pos_embed.weight[...]
    pos = jnp.sum(table[meta.pos_index].astype(jnp.float32) * meta.pos_weight[..., None], axis=1)
    x = x + pos.astype(x.dtype)
    cos, sin = vision_rotary(meta.rowcol, self.cfg)
    deepstack = []
    for i, block in enumerate(self.blocks):
      if self.cfg.remat != "none":  # training: recompute the block in its backward (keeps x only)
        x = remat_call(block, x, lambda block, x: block(x, cos, sin, meta), self.cfg.remat)
      else:
        x = block(x, cos, sin, meta)
      if i in self.cfg.deepstack_visual_indexes:
        deepstack.append(self.deepstack_merger_list[self.cfg.deepstack_visual_indexes.index(i)](x))
    return self.merger(x), deepstack
