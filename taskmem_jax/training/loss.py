"""Next-token cross entropy over the target tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_cross_entropy(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean next-token NLL over loss-mask tokens.

  logits [B, L, V] (any float dtype; the log-softmax runs in float32), input_ids [B, L], loss_mask [B, L]
  (1 where a token is a target). Position t predicts token t+1, so token t+1 counts when
  loss_mask[t+1] is 1. Returns (loss scalar, number of counted tokens scalar); a batch without
  targets gives loss 0.
  """
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, input_ids[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]
  weight = loss_mask[:, 1:].astype(jnp.float32)
  tokens = weight.sum()
  return (nll * weight).sum() / jnp.maximum(tokens, 1.0), tokens
