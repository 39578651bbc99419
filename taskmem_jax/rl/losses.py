"""Policy-gradient losses of Phase One: GSPO, token-level GRPO, and the k3 KL (taskmem-spec.md §2.1).

All take per-token log-probs of the sampled responses: log_probs [B, T] (under the policy being trained,
differentiable), old_log_probs [B, T] (the policy that sampled, constant), advantages [B] (one per
response), mask [B, T] (1 on response tokens). They return (loss, metrics) with float32 scalars.

GSPO (Zheng et al. 2025, as verl implements it): the sequence ratio s = exp(mean over the response of
log pi - log pi_old), length-normalised; each token carries s through the stop-gradient form
log s_t = log pi_t - sg(log pi_t) + sg(log s): each token's value is s and its gradient s * grad log pi_t,
so the token mean's gradient is exactly grad s. The log-ratio is clamped at 10. Clip range [1 - clip_low, 1 + clip_high] (official 0.2 /
0.28). Aggregation seq-mean-token-mean: the token mean within each response, then the mean over
responses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def aggregate(values: Array, mask: Array, mode: str) -> Array:
  """values, mask [B, T] -> scalar: over all tokens ("token-mean"), or per response then the mean over
  responses ("seq-mean-token-mean": token mean per response; "seq-mean-token-sum": token sum)."""
  mask = mask.astype(jnp.float32)
  if mode == "token-mean":
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
  per_seq = jnp.sum(values * mask, axis=-1)
  if mode == "seq-mean-token-mean":
    per_seq = per_seq / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
  elif mode != "seq-mean-token-sum":
    raise ValueError(f"aggregation {mode!r}: expected one of {AGGREGATIONS}")
  return jnp.mean(per_seq)


def _clip_metrics(ratio, clipped_low, clipped_high, mask, mode):
  return {"clip_frac_low": aggregate(clipped_low.astype(jnp.float32), mask, mode),
          "clip_frac_high": aggregate(clipped_high.astype(jnp.float32), mask, mode),
          "ratio_mean": aggregate(ratio, mask, mode)}


def gspo_loss(log_probs: Array, old_log_probs: Array, advantages: Array, mask: Array, *, clip_low: float = 0.2,
              clip_high: float = 0.28, aggregation: str = "seq-mean-token-mean") -> tuple[Array, dict]:
  """The GSPO clipped objective (negated, to minimise)."""
  mask_f = mask.astype(jnp.float32)
  log_ratio = log_probs - old_log_probs
  seq_log_ratio = jnp.sum(log_ratio * mask_f, axis=-1) / jnp.maximum(jnp.sum(mask_f, axis=-1), 1.0)  # [B]
  token_log_ratio = log_probs - jax.lax.stop_gradient(log_probs) + jax.lax.stop_gradient(seq_log_ratio)[:, None]
  ratio = jnp.exp(jnp.minimum(token_log_ratio, 10.0))
  adv = advantages[:, None].astype(jnp.float32)
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  losses = jnp.maximum(unclipped, clipped)
  loss = aggregate(losses, mask, aggregation)
  metrics = _clip_metrics(ratio, (ratio < 1.0 - clip_low) & (adv < 0), (ratio > 1.0 + clip_high) & (adv > 0),
                          mask, aggregation)
  return loss, {**metrics, "seq_log_ratio_mean": jnp.mean(seq_log_ratio)}


def grpo_loss(log_probs: Array, old_log_probs: Array, advantages: Array, mask: Array, *, clip_low: float = 0.2,
              clip_high: float = 0.28, aggregation: str = "token-mean") -> tuple[Array, dict]:
  """Token-level GRPO / PPO clip: each token's ratio exp(log pi_t - log pi_old_t), clamped at exp(20)."""
  ratio = jnp.exp(jnp.clip(log_probs - old_log_probs, -20.0, 20.0))
  adv = advantages[:, None].astype(jnp.float32)
  losses = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high))
  loss = aggregate(losses, mask, aggregation)
  return loss, _clip_metrics(ratio, (ratio < 1.0 - clip_low) & (adv < 0), (ratio > 1.0 + clip_high) & (adv > 0),
                             mask, aggregation)


def k3_kl(log_probs: Array, ref_log_probs: Array, mask: Array, *, aggregation: str = "token-mean") -> Array:
  """Schulman's k3 estimator of KL(pi || pi_ref) per token, exp(r) - r - 1 with r = log pi_ref - log pi
  clamped to [-20, 20], the per-token values clamped to [-10, 10] (verl's "low_var_kl"); aggregated."""
  r = jnp.clip(ref_log_probs - log_probs, -20.0, 20.0)
  kl = jnp.clip(jnp.exp(r) - r - 1.0, -10.0, 10.0)
  return aggregate(kl, mask, aggregation)


LOSSES = {"gspo": gspo_loss, "grpo": grpo_loss}
