"""The pieces of a Phase-One update: group batches, token log-probs and the group gradient.

A training group is the G responses sampled for one window: G rows of prompt + response sharing one
prompt, so one video. The window's vision features are computed once and every row reads them (row g's
vision_index points at the same features), which is exact and G times cheaper than G copies of the
pixels. Groups of different windows differ in their video grid, so each group is its own call and the
mini-batch's gradient is the mean of its groups' gradients (every group has G rows, so that equals the
seq-mean over the mini-batch). rl/population.py vmaps and jits these over the member axis.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taskmem_jax.models.qwen3_vl import ModelInputs, prepare_inputs
from taskmem_jax.models.qwen3_vl.positions import vision_metadata
from taskmem_jax.rl.losses import LOSSES, k3_kl


class GroupBatch(NamedTuple):
  """One group, ready for the jitted functions.

  inputs: ModelInputs for [G, L] rows (right-padded prompt + response); pixel_values / vision_meta of ONE
  copy of the window's video, every row's vision_index pointing into its features.
  response_mask: [G, L] float32, 1 where the token at that position is a response token (so the
  log-prob at that position, of that token given the ones before, is trained).
  """
  inputs: ModelInputs
  response_mask: np.ndarray


class LossConfig(NamedTuple):
  """Static loss settings (hashable: they select the compiled function)."""
  loss: str = "gspo"
  clip_low: float = 0.2
  clip_high: float = 0.28
  aggregation: str = "seq-mean-token-mean"
  kl_coef: float = 0.0
  temperature: float = 1.0


def group_batch(config, prompt_ids: np.ndarray, responses: list[np.ndarray], pixel_values, video_grid_thw,
                pad_id: int, length: int) -> GroupBatch:
  """prompt_ids [Lp] (no padding), responses: G arrays of token ids (stop token included), the window's
  pixel rows and grid (both None for a text-only prompt) -> a GroupBatch of [G, length] rows."""
  g = len(responses)
  ids = np.full((g, length), pad_id, np.int32)
  attention = np.zeros((g, length), np.int32)
  mask = np.zeros((g, length), np.float32)
  lp = len(prompt_ids)
  for i, r in enumerate(responses):
    n = lp + len(r)
    if n > length:
      raise ValueError(f"prompt {lp} + response {len(r)} tokens exceed the padded length {length}")
    ids[i, :lp], ids[i, lp:n] = prompt_ids, r
    attention[i, :n] = 1
    mask[i, lp:n] = 1.0
  if video_grid_thw is None:  # a text-only prompt
    inputs = prepare_inputs(config, ids, attention)
    return GroupBatch(inputs._replace(position_ids=np.asarray(inputs.position_ids, np.int32),
                                      rope_deltas=np.asarray(inputs.rope_deltas, np.int32)), mask)
  grid = np.asarray(video_grid_thw, np.int64).reshape(-1, 3)
  # Index work for G copies of the video, then every row is pointed at the first copy's features.
  inputs = prepare_inputs(config, ids, attention, pixel_values_videos=None, video_grid_thw=np.tile(grid, (g, 1)),
                          require_pixels=False)
  per_row = int((inputs.vision_index[0] >= 0).sum())
  vision_index = np.where(inputs.vision_index >= 0, inputs.vision_index % max(per_row, 1), -1).astype(np.int32)
  inputs = inputs._replace(position_ids=np.asarray(inputs.position_ids, np.int32),
                           rope_deltas=np.asarray(inputs.rope_deltas, np.int32), vision_index=vision_index,
                           pixel_values=np.asarray(pixel_values, np.float32),
                           vision_meta=vision_metadata(grid, config.vision))
  return GroupBatch(inputs, mask)


# Positions per block of the log-prob head: a [B, 1024, V] fp32 block of logits (0.6 GB per row at Qwen3-VL's
# 151,936 tokens) instead of [B, L, V], which is 15 GB per row at the official 24,576-token prompts.
LOGIT_CHUNK = 1024


def token_log_probs(model, inputs: ModelInputs, temperature: float, chunk: int = LOGIT_CHUNK) -> jax.Array:
  """[B, L] float32: entry t = log softmax(logits[t-1] / temperature)[input_ids[t]]; entry 0 is 0.

  The head runs over blocks of ``chunk`` positions under jax.checkpoint, so neither the forward nor the
  backward holds the [B, L, V] logits; each block's values are those of the whole-sequence computation."""
  features, deepstack = None, None
  if inputs.pixel_values is not None:
    features, deepstack = model.encode_vision(inputs.pixel_values, inputs.vision_meta)
  hidden = model.hidden_states(inputs, features, deepstack)[:, :-1]  # [B, L-1, H]
  targets = inputs.input_ids[:, 1:]
  b, n, h = hidden.shape
  chunk = min(chunk, n)
  blocks = -(-n // chunk)
  pad = blocks * chunk - n
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, blocks, chunk, h).swapaxes(0, 1)
  targets = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, blocks, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def block(args):
    hid, tgt = args  # [B, chunk, H], [B, chunk]
    logp = jax.nn.log_softmax(model.logits(hid).astype(jnp.float32) / temperature, axis=-1)
    return jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]

  picked = jax.lax.map(block, (hidden, targets)).swapaxes(0, 1).reshape(b, blocks * chunk)[:, :n]
  return jnp.pad(picked, ((0, 0), (1, 0)))


def split_log_probs(graphdef, params, rest, temperature: float, inputs: ModelInputs) -> jax.Array:
  """token_log_probs with the model as (graphdef, params, rest)."""
  return token_log_probs(nnx.merge(graphdef, params, rest), inputs, temperature)


def _loss(graphdef, params, rest, loss_cfg: LossConfig, batch: GroupBatch, old_log_probs, advantages, ref_log_probs):
  logp = token_log_probs(nnx.merge(graphdef, params, rest), batch.inputs, loss_cfg.temperature)
  loss_fn = LOSSES[loss_cfg.loss]
  loss, metrics = loss_fn(logp, old_log_probs, advantages, batch.response_mask, clip_low=loss_cfg.clip_low,
                          clip_high=loss_cfg.clip_high, aggregation=loss_cfg.aggregation)
  metrics = {**metrics, "pg_loss": loss}
  if loss_cfg.kl_coef:
    kl = k3_kl(logp, ref_log_probs, batch.response_mask, aggregation=loss_cfg.aggregation)
    loss = loss + loss_cfg.kl_coef * kl
    metrics["kl"] = kl
  return loss, metrics


def group_grad(graphdef, params, rest, loss_cfg: LossConfig, batch: GroupBatch, old_log_probs, advantages,
               ref_log_probs=None):
  """(grads, metrics) of one group's loss; metrics are float32 scalars (loss included)."""
  grad_fn = jax.grad(lambda p: _loss(graphdef, p, rest, loss_cfg, batch, old_log_probs, advantages,
                                     ref_log_probs), has_aux=True)
  grads, metrics = grad_fn(params)
  return grads, metrics


@jax.jit
def add_trees(a, b):
  return jax.tree.map(jnp.add, a, b)
