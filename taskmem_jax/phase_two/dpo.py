"""DPO on the steer tree only (taskmem-spec.md §3.4): the backbone is frozen and never copied.

A pair is two responses to one prompt (one window with the task hint): chosen and rejected, full
response text (thinking + JSON + <|im_end|>) as the policy sampled it. Its loss is

    delta = sum_t [log pi(chosen_t) - log ref(chosen_t)] - sum_t [log pi(rejected_t) - log ref(rejected_t)]
    L = -log sigmoid(beta * delta)            (+ kl_coef * k3 KL to the reference, token mean per row)

where the reference is the same graph merged with a zero steer (the Phase-One policy), whose log-probs
are computed once per pair before training. The two rows share the window's vision features
(rl.step.group_batch with G = 2). Gradients flow to the steer tree alone, so the optimizer state is the
size of the steer (2 x 2,048 floats on Qwen3-VL-30B-A3B). The official trainer back-propagates each row
only through its own log-probs with its partner's from the step's start; here both rows of a pair are
in one mini-batch, which gives the exact DPO gradient.
"""

from __future__ import annotations

import functools
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from taskmem_jax import distributed
from taskmem_jax import sharding as shd
from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.rl.losses import k3_kl
from taskmem_jax.rl.step import GroupBatch, group_batch, token_log_probs
from taskmem_jax.training import checkpoint as ckpt
from taskmem_jax.training.data import bucket_length
from taskmem_jax.training.optim import TrainState, add_trees, make_optimizer
from taskmem_jax.training.run_log import RunLog


class PairExample(NamedTuple):
  """prompt_ids [Lp] (no padding); the window's pixel rows and video grid; chosen / rejected response ids
  (stop token included)."""
  prompt_ids: np.ndarray
  pixels: np.ndarray
  grid: np.ndarray
  chosen: np.ndarray
  rejected: np.ndarray


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float):
  """Per-pair sequence log-probs [P] -> (mean loss, metrics): L = -log sigmoid(beta * delta)."""
  delta = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
  loss = -jax.nn.log_sigmoid(beta * delta)
  return jnp.mean(loss), {"delta": jnp.mean(delta), "accuracy": jnp.mean((delta > 0).astype(jnp.float32))}


def pair_batch(config, example: PairExample, pad_id: int, buckets) -> GroupBatch:
  length = bucket_length(len(example.prompt_ids) + max(len(example.chosen), len(example.rejected)), tuple(buckets))
  return group_batch(config, example.prompt_ids, [example.chosen, example.rejected], example.pixels, example.grid,
                     pad_id, length)


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=(0, 4))
def reference_log_probs(graphdef, steer, backbone, rest, temperature: float, batch: GroupBatch):
  """Token log-probs [2, L] under the zero steer: the reference policy, from the same weights."""
  zero = jax.tree.map(jnp.zeros_like, steer)
  return token_log_probs(nnx.merge(graphdef, zero, backbone, rest), batch.inputs, temperature)


def _pair_loss(steer, graphdef, backbone, rest, batch: GroupBatch, ref_tokens, beta, kl_coef, temperature):
  logp = token_log_probs(nnx.merge(graphdef, steer, backbone, rest), batch.inputs, temperature)
  mask = batch.response_mask
  seq, ref_seq = jnp.sum(logp * mask, -1), jnp.sum(ref_tokens * mask, -1)
  loss, metrics = dpo_loss(seq[:1], seq[1:], ref_seq[:1], ref_seq[1:], beta)
  if kl_coef:
    kl = k3_kl(logp, ref_tokens, mask, aggregation="seq-mean-token-mean")
    loss = loss + kl_coef * kl
    metrics["kl"] = kl
  return loss, {**metrics, "loss": loss}


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8))
def pair_grad(graphdef, steer, backbone, rest, batch: GroupBatch, ref_tokens, beta: float, kl_coef: float,
              temperature: float):
  """(grads of the steer tree, metrics) of one pair; the backbone is an argument, not a variable."""
  return jax.grad(_pair_loss, has_aux=True)(steer, graphdef, backbone, rest, batch, ref_tokens, beta, kl_coef,
                                            temperature)


def steer_optimizer(cfg) -> optax.GradientTransformation:
  """The official Phase-Two optimizer: clip 1.0, AdamW (lr 1e-3 throughout, weight decay 0.01 on the steer)."""
  return make_optimizer(cfg, constant_lr=True, decay_vectors=True)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _apply(optimizer, state: TrainState, grad_sum, count):
  grads = jax.tree.map(lambda g: g / count, grad_sum)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), optax.global_norm(grads)


def metric_names(kl_coef: float) -> list[str]:
  """The names of pair_grad's metrics (sorted), known before any pair is seen."""
  return sorted(["accuracy", "delta", "loss"] + (["kl"] if kl_coef else []))


def train_steer(cfg, model, pairs: list[PairExample], pad_id: int, *, workdir: str | None = None,
                progress: bool = True, mesh=None, preset="fsdp", pair_ids=None) -> dict:
  """Trains the model's steer (adapters.steer.add_steer first) on `pairs` with DPO, in place.

  cfg: steps, pairs_per_step (official 32 = 64 rows), num_minibatches (official 8), beta, kl_coef, lr,
  b1, b2, weight_decay, grad_clip, temperature, buckets, seed. Pairs are shuffled (seed) and cycled when a
  step needs more than there are. workdir: orbax checkpoints of (steer, optimizer) after every step, so
  a killed run resumes, and each step's metrics as TensorBoard scalars in workdir/tb. Returns
  {"history": per-step metrics, "seconds"}.
  mesh (sharding.make_mesh): the frozen backbone is placed with sharding.param_shardings under `preset`
  (no copy when it already is), the steer tree, its optimizer state and the rest replicated.
  Several processes (mesh: sharding.data_parallel_mesh; the model each process's local copy,
  distributed.local_model): `pairs` are this process's and pair_ids their global ids (unique across
  processes; the order the step draws from is over all ids, as one process with every pair would draw).
  Each process computes its pairs' gradients, the mini-batch sums are all-reduced, and every process
  applies the same update, so the steers stay equal.
  """
  multi = jax.process_count() > 1
  ids = np.arange(len(pairs)) if pair_ids is None else np.asarray(pair_ids, np.int64)
  if len(ids) != len(pairs):
    raise ValueError(f"train_steer: {len(pairs)} pairs but {len(ids)} pair_ids")
  all_ids = np.sort(distributed.allgather_ragged(ids)) if multi else ids
  if not len(all_ids):
    raise ValueError("train_steer: no preference pairs to train on")
  if multi and mesh is None:
    raise ValueError("train_steer: several processes need mesh= (sharding.data_parallel_mesh)")
  if multi and workdir:
    raise ValueError("train_steer: workdir checkpoints hold one process's steer; with several processes pass "
                     "workdir=None (the steer is retrained from its pairs)")
  tic = time.perf_counter()
  graphdef, steer, backbone, rest = steer_lib.split(model)
  optimizer = steer_optimizer(cfg)
  steer = jax.tree.map(jnp.copy, steer)  # the updates donate the state; the model's own buffers stay valid
  global_mesh, mesh = mesh, (distributed.local_mesh(mesh) if multi else mesh)  # the state lives per process
  if mesh is not None:
    replicated = NamedSharding(mesh, PartitionSpec())
    backbone = jax.device_put(backbone, shd.param_shardings(backbone, mesh, preset))
    steer, rest = jax.device_put((steer, rest), jax.tree.map(lambda _: replicated, (steer, rest)))
  state = TrainState(jnp.zeros((), jnp.int32), steer, optimizer.init(steer))
  temperature = float(cfg.temperature)
  batches = [pair_batch(model.config, p, pad_id, cfg.buckets) for p in pairs]
  refs = [reference_log_probs(graphdef, steer, backbone, rest, temperature, b) for b in batches]
  order = np.random.default_rng(cfg.seed).permutation(len(all_ids))
  local_index = {int(i): k for k, i in enumerate(ids)}
  names = metric_names(float(cfg.kl_coef))
  manager = start = None
  if workdir:
    manager = ckpt.make_manager(os.path.join(workdir, "checkpoints"), keep=1, save_every=1)
    if manager.latest_step() is not None:
      state, data = ckpt.restore(manager, state)
      start = int(data["step"])
  start = start or 0
  log = RunLog(workdir, desc="dpo", total=cfg.steps, start=start, progress=progress, jsonl=False)
  history = []
  for step in range(start, cfg.steps):
    picks = [int(all_ids[order[(step * cfg.pairs_per_step + k) % len(all_ids)]])
             for k in range(cfg.pairs_per_step)]
    metrics = []
    for chunk in np.array_split(np.asarray(picks), cfg.num_minibatches):
      if not len(chunk):
        continue
      grad_sum = None
      for pick in chunk:
        if int(pick) not in local_index:
          continue  # another process's pair
        k = local_index[int(pick)]
        grads, m = pair_grad(graphdef, state.params, backbone, rest, batches[k], refs[k], float(cfg.beta),
                             float(cfg.kl_coef), temperature)
        grad_sum = grads if grad_sum is None else add_trees(grad_sum, grads)
        metrics.append(m)
      if multi:  # the mini-batch's gradient sum over every process's pairs
        grad_sum = jax.tree.map(jnp.zeros_like, state.params) if grad_sum is None else grad_sum
        summed = distributed.sum_over_processes(grad_sum, global_mesh, jax.tree.map(
            lambda _: NamedSharding(global_mesh, PartitionSpec()), grad_sum))
        grad_sum = distributed.local_view(summed, global_mesh)
      state, grad_norm = _apply(optimizer, state, grad_sum, float(len(chunk)))
    host = jax.device_get(metrics)
    sums = np.array([[np.sum([m[k] for m in host]) if host else 0.0 for k in names] + [len(host)]])
    total = distributed.allgather_rows(sums).sum(0)  # one process: its own row
    row = {k: float(total[j] / total[-1]) for j, k in enumerate(names)}
    row.update(step=step + 1, grad_norm=float(grad_norm), steer_norm=float(optax.global_norm(state.params)))
    history.append(row)
    log.write([row])
    log.bar.update(1)
    if manager is not None:
      ckpt.save(manager, step + 1, state, {"step": step + 1}, force=True)
  log.close()
  if manager is not None:
    manager.wait_until_finished()
    manager.close()
  values = np.asarray(jax.tree.leaves(state.params)[0])
  steer_lib.set_steer(model, values)
  return {"history": history, "seconds": time.perf_counter() - tic}
