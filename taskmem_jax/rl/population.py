"""A population of P policies trained in one job: the update step vmapped over the member axis.

Members share the model structure, the optimizer settings and the streams (the same windows at every
step); they differ in their reward settings (cfg.population: one dict of RewardConfig overrides each),
hence in their rewards, advantages, parameters and, on-policy, their histories. Parameters and
optimizer states are stacked on a leading [P] axis; old log-probs, group gradients and the AdamW update
are jax.vmap'ed over it, so a step is one compiled program per group shape whatever P is. When several
devices are visible and P is a multiple of their number, the member axis is sharded over them
(a 1-D mesh named "population"), so each device trains P / devices members.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from taskmem_jax.rl.step import LossConfig, group_grad, split_log_probs
from taskmem_jax.training.sft import TrainState


def stack(trees):
  """[tree] * P -> one tree with a leading [P] axis on every leaf."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member(tree, p: int):
  """Member p's slice of a stacked tree."""
  return jax.tree.map(lambda x: x[p], tree)


def population_sharding(size: int):
  """NamedSharding that splits the leading member axis over all devices, or None (one device, or P not
  a multiple of the device count)."""
  devices = jax.devices()
  if len(devices) < 2 or size % len(devices):
    return None
  return NamedSharding(Mesh(np.asarray(devices), ("population",)), PartitionSpec("population"))


def shard(tree, sharding):
  return tree if sharding is None else jax.device_put(tree, sharding)


@functools.partial(jax.jit, static_argnums=(0, 3))
def log_probs(graphdef, params, rest, temperature: float, inputs):
  """[P, G, L] log-probs: token_log_probs of each member's params on its own inputs [P, G, L]."""
  return jax.vmap(lambda p, i: split_log_probs(graphdef, p, rest, temperature, i))(params, inputs)


@functools.partial(jax.jit, static_argnums=(0, 3))
def group_grads(graphdef, params, rest, loss_cfg: LossConfig, batch, old_log_probs, advantages, ref_log_probs=None):
  """Per-member (grads, metrics) of one group: every argument but rest has the leading [P] axis."""
  fn = lambda p, b, o, a, r: group_grad(graphdef, p, rest, loss_cfg, b, o, a, r)
  return jax.vmap(fn)(params, batch, old_log_probs, advantages, ref_log_probs)


def make_apply(optimizer: optax.GradientTransformation):
  """The jitted, vmapped update: (stacked TrainState, summed grads [P], groups) -> (TrainState, grad_norm [P]).
  The state is donated."""

  def one(state: TrainState, grad_sum, count):
    grads = jax.tree.map(lambda g: g / count, grad_sum)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), optax.global_norm(grads)

  return jax.jit(jax.vmap(one, in_axes=(0, 0, None)), donate_argnums=0)
