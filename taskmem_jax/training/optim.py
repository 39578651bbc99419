"""What every training loop shares: the train state, the optimizer factory, the learning-rate schedule and
gradient accumulation (SFT, the vision stage, Phase One and Phase-Two DPO all build theirs here)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
  """step: int32 scalar (steps done); params: the model's nnx.Param state; opt_state: optax's."""
  step: jax.Array
  params: Any
  opt_state: Any


def lr_schedule(cfg) -> optax.Schedule:
  """Linear warmup from 0 to cfg.lr over cfg.warmup_steps, then cosine to cfg.lr * cfg.end_lr_ratio at cfg.steps."""
  return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, max(cfg.steps, cfg.warmup_steps + 1),
                                            end_value=cfg.lr * cfg.end_lr_ratio)


def is_frozen(path, frozen: tuple[str, ...]) -> bool:
  """Whether a parameter at `path` (key path from nnx.split) lies under one of the `frozen` top-level
  modules (e.g. ("visual",): the vision tower)."""
  first = path[0]
  return getattr(first, "key", getattr(first, "name", first)) in frozen


def make_optimizer(cfg, frozen: tuple[str, ...] = (), *, constant_lr: bool = False,
                   decay_vectors: bool = False) -> optax.GradientTransformation:
  """Global-norm clipping (cfg.grad_clip), then AdamW (cfg.lr, b1, b2, weight_decay) under lr_schedule(cfg),
  or at cfg.lr throughout with constant_lr. Weight decay on matrices only (not norms or biases), or on
  every parameter with decay_vectors (the Phase-Two steer is a vector, and the official DPO decays it).
  Parameters under `frozen` modules get zero updates (no decay either)."""
  mask = None if decay_vectors else (lambda params: jax.tree.map(lambda p: p.ndim >= 2, params))
  adamw = optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.adamw(cfg.lr if constant_lr else lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2,
                  weight_decay=cfg.weight_decay, mask=mask))
  if not frozen:
    return adamw
  labels = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if is_frozen(path, frozen) else "train", params)
  return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)


@jax.jit
def add_trees(a, b):
  """a + b leaf by leaf (summing gradients over micro-batches or groups), one compiled program per tree."""
  return jax.tree.map(jnp.add, a, b)
