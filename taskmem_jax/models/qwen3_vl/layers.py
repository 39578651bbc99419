"""Small building blocks shared by the vision tower and the text decoder.

Parameter names mirror the Hugging Face checkpoint (``weight``, ``bias``) except Linear's ``kernel``,
which is stored [in, out] (the transpose of PyTorch's [out, in]); params.py maps between them.
Every module computes in the dtype of its parameters, as transformers does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
_INIT_STD = 0.02


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


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
  """Grouped-query attention without materialising repeated K/V.

  q: [B, L, Hq, D]; k, v: [B, S, Hkv, D]; mask: [B, L, S] bool (True = attend). Returns [B, L, Hq, D].
  Query head i reads KV head i // (Hq/Hkv), as transformers' repeat_kv does. Scores and softmax in fp32.
  A fully masked row (a left-padding query) gets uniform weights, as transformers' finite mask gives.
  """
  b, l, hq, d = q.shape
  hkv = k.shape[2]
  qg = q.reshape(b, l, hkv, hq // hkv, d)
  scores = jnp.einsum("blhgd,bshd->bhgls", qg, k, preferred_element_type=jnp.float32) * scale
  scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhgls,bshd->blhgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, l, hq, d).astype(q.dtype)
