"""A population of P policies trained in one job: the update step vmapped over the member axis.

Members share the model structure, the optimizer settings and the streams (the same windows at every
step); they differ in their reward settings (cfg.population: one dict of RewardConfig overrides each),
hence in their rewards, advantages, parameters and, on-policy, their histories. Parameters and
optimizer states are stacked on a leading [P] axis; old log-probs, group gradients and the AdamW update
are jax.vmap'ed over it, so a step is one compiled program per group shape whatever P is. On several
devices, `make_mesh` lays out a ("population", "fsdp") mesh: members are spread over the population
axis and each member's parameters are split over the fsdp axis (cfg.mesh.fsdp; -1 = every device, the
setting for one large policy), and jit partitions the vmapped programs accordingly.
"""

from __future__ import annotations

import functools
import math

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


def make_mesh(size: int, fsdp: int = 1) -> Mesh | None:
  """A ("population", "fsdp") device mesh for P = size members, or None on one device.

  fsdp: devices each member's parameters are split over (FSDP); -1 = all of them. The population axis
  takes gcd(P, devices / fsdp) devices, so members are spread as far as they divide evenly.
  """
  devices = jax.devices()
  n = len(devices)
  if n < 2:
    return None
  fsdp = n if fsdp == -1 else fsdp
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"mesh fsdp={fsdp}: must divide the {n} devices (or be -1 for all)")
  pop = math.gcd(size, n // fsdp)
  if pop * fsdp == 1:
    return None
  return Mesh(np.asarray(devices[:pop * fsdp]).reshape(pop, fsdp), ("population", "fsdp"))


def state_sharding(tree, mesh: Mesh | None):
  """Per leaf of a stacked tree [P, ...]: the member axis over "population", the largest other dimension
  that the "fsdp" axis divides over "fsdp" (replicated when none does). None without a mesh."""
  if mesh is None:
    return None
  pop, fsdp = mesh.shape["population"], mesh.shape["fsdp"]

  def spec(leaf):
    axes = ["population" if pop > 1 and leaf.ndim and leaf.shape[0] % pop == 0 else None] + [None] * (leaf.ndim - 1)
    if fsdp > 1:
      dims = sorted(range(1, leaf.ndim), key=lambda d: -leaf.shape[d])
      dim = next((d for d in dims if leaf.shape[d] % fsdp == 0), None)
      if dim is not None:
        axes[dim] = "fsdp"
    return NamedSharding(mesh, PartitionSpec(*axes[:leaf.ndim]))

  return jax.tree.map(spec, tree)


def batch_sharding(tree, mesh: Mesh | None):
  """Stacked per-member inputs: the member axis over "population", the rest replicated."""
  if mesh is None:
    return None
  pop = mesh.shape["population"]
  return jax.tree.map(lambda leaf: NamedSharding(mesh, PartitionSpec(
      "population" if pop > 1 and leaf.ndim and leaf.shape[0] % pop == 0 else None)), tree)


def shard(tree, shardings):
  """device_put of a tree to its shardings (a tree of them, from state_sharding / batch_sharding), or as is."""
  return tree if shardings is None else jax.device_put(tree, shardings)


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
