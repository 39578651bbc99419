"""Group-normalised advantages of Phase One (taskmem-spec.md §2.1), as jnp so they jit and vmap.

A[n, g] = (r[n, g] - mean_g r[n]) / (std_g r[n] + eps), std with ddof 1 (a group of one has mean 0 and
std 1, as verl's GRPO does). Then, in order:
- the negative-sample gate (optional): a response with a negative advantage is penalised only if its own
  reward is negative; otherwise its advantage becomes 0;
- optimize_threshold (the official mode): among the group's parsed responses take the best correctness
  (num_correct - num_wrong); if it is >= 0, responses that have it and a positive reward get their
  negative advantages clamped to 0 (a best-tier correct memory is never punished);
- a group whose judging failed gets all-zero advantages.

The NSR gate (how negative samples are reinforced; the paper's eq. 6 and the official code differ) is one
choice, ``nsr_gate`` (the trainer's config field of that name):
  "optimize_threshold"  the official code's default: mode="optimize_threshold", no eq. 6 gate;
  "eq6"                 the paper's eq. 6: negative advantages kept only where the reward is negative;
  "none"                plain group-normalised advantages.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

MODES = ("plain", "optimize_threshold")
# nsr_gate -> (mode, negative_gate)
NSR_GATES = {"optimize_threshold": ("optimize_threshold", False), "eq6": ("plain", True), "none": ("plain", False)}


def nsr_gate_args(nsr_gate: str) -> dict:
  """group_advantages' mode and negative_gate for an NSR gate name (module docstring)."""
  if nsr_gate not in NSR_GATES:
    raise ValueError(f"nsr_gate={nsr_gate!r}: expected one of {sorted(NSR_GATES)}")
  mode, negative_gate = NSR_GATES[nsr_gate]
  return {"mode": mode, "negative_gate": negative_gate}


def group_advantages(rewards: Array, *, eps: float = 1e-6, negative_gate: bool = False, mode: str = "plain",
                     parsed: Array | None = None, correctness: Array | None = None,
                     group_failed: Array | None = None) -> Array:
  """rewards [N, G] -> advantages [N, G] float32.

  parsed [N, G] bool and correctness [N, G] (rewards.score.GroupScore.correctness) are needed by
  mode="optimize_threshold". group_failed [N] bool: zero those groups.
  """
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}: expected one of {MODES}")
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 2:
    raise ValueError(f"rewards: expected [N groups, G responses], got shape {rewards.shape}")
  g = rewards.shape[1]
  if g == 1:
    adv = rewards
  else:
    mean = rewards.mean(axis=1, keepdims=True)
    std = rewards.std(axis=1, ddof=1, keepdims=True)
    adv = (rewards - mean) / (std + eps)
  if negative_gate:
    adv = jnp.where((adv < 0) & (rewards >= 0), 0.0, adv)
  if mode == "optimize_threshold":
    if parsed is None or correctness is None:
      raise ValueError("mode='optimize_threshold' needs parsed and correctness [N, G]")
    parsed = jnp.asarray(parsed, bool)
    correctness = jnp.asarray(correctness, jnp.float32)
    best = jnp.max(jnp.where(parsed, correctness, -jnp.inf), axis=1, keepdims=True)
    protect = parsed & (correctness == best) & (best >= 0) & (rewards > 0)
    adv = jnp.where(protect, jnp.maximum(adv, 0.0), adv)
  if group_failed is not None:
    adv = jnp.where(jnp.asarray(group_failed, bool)[:, None], 0.0, adv)
  return adv
