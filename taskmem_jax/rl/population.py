"""A population of P policies trained in one job: the update step vmapped over the member axis.

Members share the model structure, the optimizer settings and the streams (the same windows at every
step); they differ in their reward settings (cfg.population: one dict of RewardConfig overrides each),
hence in their rewards, advantages, parameters and, on-policy, their histories. Parameters and
optimizer states are stacked on a leading [P] axis; old log-probs, group gradients and the AdamW update
are jax.vmap'ed over it, so a step is one compiled program per group shape whatever P is. On several
devices, `make_mesh` lays out sharding.py's ("data", "fsdp", "expert", "tensor") mesh: members are
spread over "data" and each member's parameters follow the preset's rules (cfg.mesh.preset: fsdp,
fsdp_tensor, expert) over cfg.mesh.fsdp devices (-1 = every device, the setting for one large policy),
and jit partitions the vmapped programs accordingly.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from taskmem_jax import sharding as shd
from taskmem_jax.rl.step import LossConfig, group_grad, split_log_probs
from taskmem_jax.training.optim import TrainState
from taskmem_jax.training.sft import tree_shardings


def stack(trees):
  """[tree] * P -> one tree with a leading [P] axis on every leaf."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member(tree, p: int):
  """Member p's slice of a stacked tree."""
  return jax.tree.map(lambda x: x[p], tree)


def mesh_preset(mesh_cfg) -> str:
  """The sharding preset of a cfg.mesh dict: its "preset" (default "fsdp")."""
  return str(dict(mesh_cfg or {}).get("preset", "fsdp"))


def make_mesh(size: int, mesh_cfg=None) -> Mesh | None:
  """A sharding.py ("data", "fsdp", "expert", "tensor") mesh for P = size members, or None on one device.

  mesh_cfg (cfg.mesh): {"preset": "single" | "fsdp" | "fsdp_tensor" | "expert", "fsdp": devices per member
  (-1 = all, the default with a preset), "tensor": ..., "expert": ...}; the older {"fsdp": k} form means preset "fsdp"
  over k devices per member. Each member's parameters are laid out by the preset over its k devices
  (sharding.make_mesh); the "data" axis takes gcd(P, devices / k) groups of them, so members are spread
  as far as they divide evenly.
  """
  mesh_cfg = dict(mesh_cfg or {})
  preset = mesh_preset(mesh_cfg)
  if jax.process_count() > 1:
    return _process_mesh(preset, mesh_cfg)
  devices = jax.devices()
  n = len(devices)
  k = 1 if preset == "single" else int(mesh_cfg.get("fsdp", -1 if "preset" in mesh_cfg else 1))
  k = n if k == -1 else k
  if k < 1 or n % k:
    raise ValueError(f"mesh fsdp={k}: must divide the {n} devices (or be -1 for all)")
  data = math.gcd(size, n // k)
  if data * k == 1:
    return None
  inner = shd.make_mesh(preset, devices[:k], tensor=mesh_cfg.get("tensor"), expert=mesh_cfg.get("expert"))
  grid = np.asarray(devices[:data * k]).reshape((data,) + inner.devices.shape[1:])
  return Mesh(grid, shd.MESH_AXES)


def _process_mesh(preset: str, mesh_cfg: dict) -> Mesh:
  """Several processes: sharding.data_parallel_mesh, "data" over processes. Each process holds every
  member, laid out by the preset over its own devices, and samples its share of the streams."""
  k = int(mesh_cfg.get("fsdp", -1))
  local = jax.local_device_count()
  if preset != "single" and k not in (-1, local):
    raise ValueError(f"mesh fsdp={k}: with {jax.process_count()} processes each member spans one process's "
                     f"{local} devices; set cfg.mesh.fsdp to -1 or {local}")
  return shd.data_parallel_mesh(preset, tensor=mesh_cfg.get("tensor"), expert=mesh_cfg.get("expert"))


def state_sharding(tree, mesh: Mesh | None, preset="fsdp"):
  """Per leaf of a stacked tree [P, ...] (TrainState, params, grads): the member axis over "data" (when P
  divides it; with several processes "data" runs over processes and members are replicated on it), the
  rest as sharding.py's rules lay out the parameter the leaf belongs to (optimizer moments as their
  parameter; scalars and unknown leaves replicated). With several processes a TrainState's optimizer
  moments are also split over "data" (sharding.zero_rules): each process keeps a whole copy of the
  parameters to sample with, but only its share of the moments. None without a mesh."""
  if mesh is None:
    return None
  if jax.process_count() == 1:
    return tree_shardings(tree, mesh, preset, lead="data")
  out = tree_shardings(tree, mesh, preset, lead="data", split_lead=False)
  if isinstance(tree, TrainState):  # the optimizer moments split over the processes too (ZeRO-1)
    out = out._replace(opt_state=tree_shardings(tree.opt_state, mesh, shd.zero_rules(preset), lead="data",
                                                split_lead=False))
  return out


def batch_sharding(tree, mesh: Mesh | None):
  """Stacked per-member inputs: the member axis over "data", the rest replicated."""
  if mesh is None:
    return None
  d = mesh.shape["data"]
  return jax.tree.map(lambda leaf: NamedSharding(mesh, PartitionSpec(
      "data" if d > 1 and leaf.ndim and leaf.shape[0] % d == 0 else None)), tree)


def shard(tree, shardings):
  """device_put of a tree to its shardings (a tree of them, from state_sharding / batch_sharding), or as is."""
  return tree if shardings is None else jax.device_put(tree, shardings)


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=(0, 3))
def log_probs(graphdef, params, rest, temperature: float, inputs):
  """[P, G, L] log-probs: token_log_probs of each member's params on its own inputs [P, G, L]."""
  return jax.vmap(lambda p, i: split_log_probs(graphdef, p, rest, temperature, i))(params, inputs)


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=(0, 3))
def group_grads(graphdef, params, rest, loss_cfg: LossConfig, batch, old_log_probs, advantages, ref_log_probs=None):
  """Per-member (grads, metrics) of one group: every argument but rest has the leading [P] axis."""
  fn = lambda p, b, o, a, r: group_grad(graphdef, p, rest, loss_cfg, b, o, a, r)
  return jax.vmap(fn)(params, batch, old_log_probs, advantages, ref_log_probs)


def make_apply(optimizer: optax.GradientTransformation, sharding=None):
  """The jitted, vmapped update: (stacked TrainState, summed grads [P], groups) -> (TrainState, grad_norm [P]).
  The state is donated. sharding (state_sharding's): the new state is laid out so, whatever layout the
  compiler would pick (with ZeRO moments it could split the parameters over "data" too)."""

  def one(state: TrainState, grad_sum, count):
    grads = jax.tree.map(lambda g: g / count, grad_sum)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), optax.global_norm(grads)

  vmapped = jax.vmap(one, in_axes=(0, 0, None))

  def apply(state, grad_sum, count):
    new, norm = vmapped(state, grad_sum, count)
    return (new if sharding is None else jax.lax.with_sharding_constraint(new, sharding)), norm

  return jax.jit(apply, donate_argnums=0)
