"""Qwen3-VL for conditional generation: vision tower + text decoder + LM head.

Two layers of API:
- ``model(input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None,
  pixel_values_videos=None, video_grid_thw=None)`` mirrors transformers and returns logits [B, L, V].
  It does the host-side index work (``prepare_inputs``) and then runs a jitted pure function.
- ``prepare_inputs`` + ``model.forward(inputs)`` / ``model.encode_vision`` / ``model.forward_from_features``
  are traceable, for callers that jit whole steps (training, the rollout scan) or cache vision
  features per clip.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taskmem_jax import sharding as shd
from taskmem_jax.models.qwen3_vl.config import Qwen3VLConfig
from taskmem_jax.models.qwen3_vl.layers import Linear, matmul
from taskmem_jax.models.qwen3_vl.positions import (InputError, VisionMetadata, get_rope_index, token_types,
                                                   vision_metadata, IMAGE, VIDEO)
from taskmem_jax.models.qwen3_vl.text import KVCache, TextModel
from taskmem_jax.models.qwen3_vl.vision import VisionModel

Array = jax.Array


class ModelInputs(NamedTuple):
  """Everything the jitted forward needs, as fixed-shape arrays.

  input_ids, attention_mask: [B, L]; position_ids: [3, B, L]; rope_deltas: [B, 1];
  vision_index: [B, L] index into the vision features (images first, then videos), -1 on text;
  pixel_values: [N, C*T*P*P] (image patches then video patches) or None; vision_meta: per-patch
  metadata for those N rows or None.
  """
  input_ids: np.ndarray
  attention_mask: np.ndarray
  position_ids: np.ndarray
  rope_deltas: np.ndarray
  vision_index: np.ndarray
  pixel_values: np.ndarray | None = None
  vision_meta: VisionMetadata | None = None


def _pixels(pixels, grids, name: str, config: Qwen3VLConfig, require_pixels: bool = True):
  if pixels is None and grids is None:
    return None, np.zeros((0, 3), np.int64)
  if grids is None or (pixels is None and require_pixels):
    raise InputError(f"{name}: pixel values and grid_thw must be given together")
  grids = np.asarray(grids, np.int64)
  if grids.ndim != 2 or grids.shape[1] != 3:
    raise InputError(f"{name}_grid_thw: expected shape [n, 3], got {grids.shape}")
  if pixels is None:
    return None, grids
  shape = tuple(pixels.shape)
  expected = (int(np.prod(grids, axis=1).sum()), config.vision.patch_dim)
  if shape != expected:
    raise InputError(f"{name} pixel values: shape {shape} does not match the grids {grids.tolist()}, "
                     f"which need {expected} (rows = sum t*h*w, width = C*T*P*P)")
  return pixels, grids


def prepare_inputs(config: Qwen3VLConfig, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None,
                   pixel_values_videos=None, video_grid_thw=None, *, require_pixels: bool = True) -> ModelInputs:
  """Host-side checks and index arithmetic for one forward pass (transformers' argument names).

  require_pixels=False accepts grids without pixel values, for callers that bring vision features
  computed earlier (encode_vision); the result then has no pixel_values / vision_meta.
  """
  ids = np.asarray(input_ids)
  if ids.ndim != 2:
    raise InputError(f"input_ids: expected shape [B, L], got {ids.shape}")
  mask = np.ones(ids.shape, np.int32) if attention_mask is None else np.asarray(attention_mask).astype(np.int32)
  image_pixels, image_grids = _pixels(pixel_values, image_grid_thw, "image", config, require_pixels)
  video_pixels, video_grids = _pixels(pixel_values_videos, video_grid_thw, "video", config, require_pixels)
  position_ids, rope_deltas = get_rope_index(ids, config, mask, image_grid_thw=image_grids,
                                             video_grid_thw=video_grids)
  merge = config.vision.spatial_merge_size**2
  types = token_types(ids, config) * (mask > 0)
  n_image = int(np.prod(image_grids, axis=1).sum()) // merge
  n_video = int(np.prod(video_grids, axis=1).sum()) // merge
  for kind, name, n in ((IMAGE, "image", n_image), (VIDEO, "video", n_video)):
    found = int((types == kind).sum())
    if found != n:
      raise InputError(f"input_ids hold {found} {name} placeholder tokens but the {name} grids give {n} features")
  flat = types.reshape(-1)
  index = np.full(flat.shape, -1, np.int64)
  index[flat == IMAGE] = np.arange(n_image)
  index[flat == VIDEO] = n_image + np.arange(n_video)
  parts = [p for p in (image_pixels, video_pixels) if p is not None]
  pixels, meta = None, None
  if parts:
    pixels = parts[0] if len(parts) == 1 else np.concatenate([np.asarray(p) for p in parts])
    meta = vision_metadata(np.concatenate([image_grids, video_grids]), config.vision)
  return ModelInputs(ids.astype(np.int32), mask, position_ids, rope_deltas,
                     index.reshape(ids.shape).astype(np.int32), pixels, meta)


class Qwen3VLForConditionalGeneration(nnx.Module):

  def __init__(self, config: Qwen3VLConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.config = config
    self.visual = VisionModel(config.vision, dtype=dtype, rngs=rngs)
    self.language_model = TextModel(config.text, dtype=dtype, rngs=rngs)
    if not config.tie_word_embeddings:
      self.lm_head = Linear(config.text.hidden_size, config.text.vocab_size, use_bias=False, dtype=dtype, rngs=rngs)
    else:
      self.lm_head = None

  @property
  def dtype(self):
    return self.language_model.embed_tokens.weight.dtype

  # --- traceable pieces ----------------------------------------------------------------------

  def encode_vision(self, pixel_values: Array, meta: VisionMetadata) -> tuple[Array, list[Array]]:
    """pixel_values [N, C*T*P*P] -> (features [N/4, H], DeepStack features: list of [N/4, H])."""
    return self.visual(pixel_values, meta)

  def hidden_states(self, inputs: ModelInputs, features: Array | None = None,
                    deepstack: list[Array] | None = None, cache: list[KVCache] | None = None,
                    cache_index: Array | int = 0, kv_mask: Array | None = None):
    """Final-normed decoder states [B, L, H]; vision features (from encode_vision) scattered in.

    Without a cache returns the states. With one (a KVCache per layer, see TextModel), the tokens
    go to slots cache_index.., kv_mask [B, S] marks real slots, and returns (states, new cache).
    """
    lm = self.language_model
    embeds = lm.embed_tokens(inputs.input_ids)
    visual_mask = inputs.vision_index >= 0
    ds = []
    if features is not None:
      index = jnp.maximum(inputs.vision_index, 0)
      embeds = jnp.where(visual_mask[..., None], features[index].astype(embeds.dtype), embeds)
      ds = [jnp.where(visual_mask[..., None], d[index], 0) for d in (deepstack or [])]
    if cache is None:
      return lm(embeds, inputs.position_ids, inputs.attention_mask, visual_mask, ds)[0]
    return lm(embeds, inputs.position_ids, kv_mask, visual_mask, ds, cache, cache_index)

  def logits(self, hidden: Array) -> Array:
    """hidden [B, L, H] -> logits [B, L, V]."""
    if self.lm_head is None:
      return matmul(hidden, self.language_model.embed_tokens.weight[...].T)
    return self.lm_head(hidden)

  def forward_from_features(self, inputs: ModelInputs, features: Array | None,
                            deepstack: list[Array] | None) -> Array:
    return self.logits(self.hidden_states(inputs, features, deepstack))

  def forward(self, inputs: ModelInputs) -> Array:
    """Logits [B, L, V] from prepared inputs (traceable)."""
    features, deepstack = None, None
    if inputs.pixel_values is not None:
      features, deepstack = self.encode_vision(inputs.pixel_values, inputs.vision_meta)
    return self.forward_from_features(inputs, features, deepstack)

  # --- transformers-style entry point --------------------------------------------------------

  def __call__(self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None,
               pixel_values_videos=None, video_grid_thw=None) -> Array:
    inputs = prepare_inputs(self.config, input_ids, attention_mask, pixel_values, image_grid_thw,
                            pixel_values_videos, video_grid_thw)
    graphdef, state = nnx.split(self)
    return _jitted_forward(graphdef, state, inputs)

  def vision_features(self, pixel_values, grid_thw) -> tuple[Array, list[Array]]:
    """Jitted encode_vision from pixel rows and grids (transformers' get_image/video_features)."""
    meta = vision_metadata(grid_thw, self.config.vision)
    _pixels(pixel_values, grid_thw, "vision", self.config)
    graphdef, state = nnx.split(self)
    return _jitted_vision(graphdef, state, pixel_values, meta)


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=0)
def _jitted_forward(graphdef, state, inputs: ModelInputs) -> Array:
  return nnx.merge(graphdef, state).forward(inputs)


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=0)
def _jitted_vision(graphdef, state, pixel_values, meta: VisionMetadata) -> tuple[Array, list[Array]]:
  return nnx.merge(graphdef, state).encode_vision(pixel_values, meta)
