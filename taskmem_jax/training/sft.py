"""Supervised fine-tuning of Qwen3-VL: AdamW over a jitted pure step, grain data, orbax checkpoints.

Functional core: the model is split once into (graphdef, params, rest); the step is a jitted pure
function of (TrainState, rest, ModelInputs, loss_mask) that donates the state. Metrics stay on device
and are fetched every `log_every` steps, so the loop never waits on the device in between; at those
points they go to workdir/metrics.jsonl and TensorBoard events in workdir/tb, and at each checkpoint
the curves to workdir/curves.html and curves.png.
"""

from __future__ import annotations

import functools
import os
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from taskmem_jax import distributed
from taskmem_jax import sharding as shd
from taskmem_jax.eval.curves import write_curves
from taskmem_jax.models.qwen3_vl import ModelInputs
from taskmem_jax.training import checkpoint as ckpt
from taskmem_jax.training.data import batch_features, make_dataset, model_inputs
from taskmem_jax.training.loss import masked_cross_entropy
from taskmem_jax.training.optim import TrainState, is_frozen, lr_schedule, make_optimizer
from taskmem_jax.training.run_log import RunLog


def init_state(model: nnx.Module, optimizer: optax.GradientTransformation):
  """model -> (graphdef, rest, TrainState); rest holds non-Param variables (none in Qwen3-VL), not trained."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, rest, TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def loss_fn(graphdef, params, rest, inputs: ModelInputs, loss_mask: jax.Array, frozen: tuple[str, ...] = (),
            features=None):
  """(loss, tokens) of one batch; pure in params. Parameters under `frozen` modules get no gradient
  (stop_gradient, so XLA drops their backward pass). features: (vision features, DeepStack list) computed
  beforehand (data.with_vision_features) instead of the tower's forward on inputs.pixel_values."""
  if frozen:
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: jax.lax.stop_gradient(p) if is_frozen(path, frozen) else p, params)
  model = nnx.merge(graphdef, params, rest)
  logits = model.forward(inputs) if features is None else model.forward_from_features(inputs, *features)
  return masked_cross_entropy(logits, inputs.input_ids, loss_mask)


def make_train_step(graphdef, optimizer: optax.GradientTransformation, schedule: optax.Schedule | None = None,
                    frozen: tuple[str, ...] = ()):
  """The jitted step: (TrainState, rest, ModelInputs, loss_mask [B, L]) -> (TrainState, metrics).

  The state argument is donated. metrics: loss, tokens, grad_norm (before clipping), lr; float32
  device scalars. Compiles once per distinct batch shape (length bucket, video grid).
  """

  def step(state: TrainState, rest, inputs: ModelInputs, loss_mask, features=None):
    grad_fn = jax.value_and_grad(lambda p: loss_fn(graphdef, p, rest, inputs, loss_mask, frozen, features),
                                 has_aux=True)
    (loss, tokens), grads = grad_fn(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "tokens": tokens, "grad_norm": optax.global_norm(grads),
               "lr": jnp.asarray(schedule(state.step) if schedule else jnp.nan, jnp.float32)}
    return TrainState(state.step + 1, params, opt_state), metrics

  return shd.in_mesh_of_args(jax.jit(step, donate_argnums=0))


def _param_spec(keys, shape, mesh: Mesh, preset) -> tuple:
  """The PartitionSpec entries of a leaf whose path ends in a model parameter's path (an optimizer moment
  under optax's own keys, or the parameter itself); () (replicated) when no suffix names a parameter."""
  names = shd._path(keys)
  for i in range(len(names)):
    try:
      axes = shd.logical_axes(names[i:], shape)
    except ValueError:
      continue
    return tuple(shd.spec_for(axes, shape, mesh, preset))
  return ()


def tree_shardings(tree, mesh: Mesh, preset="fsdp", lead=None, split_lead: bool = True):
  """NamedSharding per leaf of any tree holding parameters (params, optax state, a TrainState): each leaf
  shaped like a parameter whose path it ends with gets that parameter's sharding (sharding.param_shardings),
  anything else (step, Adam's count) is replicated. lead: a mesh axis for a leading stacked axis (the
  population's [P]), placed there when it divides that axis and split_lead (else replicated on it)."""

  def one(keys, leaf):
    shape = tuple(leaf.shape)
    if lead is None:
      return NamedSharding(mesh, PartitionSpec(*_param_spec(keys, shape, mesh, preset)))
    if not shape:
      return NamedSharding(mesh, PartitionSpec())
    head = lead if split_lead and mesh.shape[lead] > 1 and shape[0] % mesh.shape[lead] == 0 else None
    return NamedSharding(mesh, PartitionSpec(head, *_param_spec(keys, shape[1:], mesh, preset)))

  return jax.tree_util.tree_map_with_path(one, tree)


def shard_batch(inputs: ModelInputs, loss_mask, mesh: Mesh, preset="fsdp"):
  """device_put of a batch: [B, ...] rows (ids, masks, rope deltas, vision index; position_ids' B axis)
  over the preset's batch axes where they divide B (sharding.activation_sharding); pixels and vision
  metadata (per patch, not per row) replicated."""
  if jax.process_count() > 1:
    return _process_rows(inputs, loss_mask, mesh, preset)
  rows = lambda x, axes: jax.device_put(x, shd.activation_sharding(mesh, preset, x.shape, axes))
  row = lambda x: None if x is None else rows(x, ("batch",) + (None,) * (x.ndim - 1))
  replicated = NamedSharding(mesh, PartitionSpec())
  inputs = inputs._replace(
      input_ids=row(inputs.input_ids), attention_mask=row(inputs.attention_mask),
      position_ids=rows(inputs.position_ids, (None, "batch", None)), rope_deltas=row(inputs.rope_deltas),
      vision_index=row(inputs.vision_index),
      pixel_values=None if inputs.pixel_values is None else jax.device_put(inputs.pixel_values, replicated),
      vision_meta=None if inputs.vision_meta is None else jax.device_put(inputs.vision_meta, replicated))
  return inputs, row(loss_mask)


def _process_rows(inputs: ModelInputs, loss_mask, mesh: Mesh, preset):
  """Several processes (jax.distributed): every process builds the same global batch (same data order),
  keeps only its block of rows (distributed.process_batch) and assembles the global arrays from the
  blocks, so each host transfers only the rows its devices hold."""
  rows = distributed.process_batch(inputs.input_ids.shape[0])
  take = lambda x, axis=0: None if x is None else np.take(np.asarray(x), rows, axis=axis)  # noqa: E731
  # Pixels stay in: global_inputs refuses a batch with video (pixel rows are per clip, not per batch row).
  local = inputs._replace(input_ids=take(inputs.input_ids), attention_mask=take(inputs.attention_mask),
                          position_ids=take(inputs.position_ids, 1), rope_deltas=take(inputs.rope_deltas),
                          vision_index=take(inputs.vision_index))
  return distributed.global_inputs(local, mesh, preset), distributed.global_array(take(loss_mask), mesh, preset)


SFT_METRICS = ("loss", "grad_norm", "lr", "tokens")  # the charts of workdir/curves.html and curves.png
_OPTIMIZER_FIELDS = ("lr", "warmup_steps", "end_lr_ratio", "steps", "weight_decay", "b1", "b2", "grad_clip")


@functools.lru_cache(maxsize=8)
def _cached_step(graphdef, hyper: tuple, frozen: tuple[str, ...] = ()):
  """One jitted step per (model structure, optimizer settings, frozen modules), so that repeated train()
  calls in a process (a resume, tests, sweeps) reuse its compilations."""
  cfg = types.SimpleNamespace(**dict(zip(_OPTIMIZER_FIELDS, hyper)))
  optimizer = make_optimizer(cfg, frozen)
  return optimizer, make_train_step(graphdef, optimizer, lr_schedule(cfg), frozen)


def train(cfg, model: nnx.Module, examples, pad_id: int, *, tokenizer_dir: str | None = None,
          progress: bool = True, stop_at: int | None = None, mesh: Mesh | None = None, preset="fsdp") -> dict:
  """Trains `model` on `examples` (see data.py) for cfg.steps steps, resuming from cfg.workdir.

  The model's arrays are donated to the first step: use the returned model, not `model`, afterwards.
  stop_at: end after this step (with a checkpoint) as a preemption would; the schedule still spans
  cfg.steps, so a later call with the same cfg continues exactly. Changing cfg.steps between runs
  changes the cosine schedule of the remaining steps.

  cfg fields: steps, batch_size, buckets, seed, lr, warmup_steps, end_lr_ratio, weight_decay, b1, b2,
  grad_clip, log_every, save_every, keep_checkpoints, workdir, export_dir ("" = no export); optional:
  frozen (top-level module names whose parameters stay fixed, e.g. ("visual",); default none) and
  group_by_grid (batch examples of one video grid together, so batch_size > 1 works with mixed grids).
  Checkpoints go to cfg.workdir/checkpoints; when one exists the run continues from the latest,
  params, optimizer and data order included. The history rows also go to cfg.workdir/metrics.jsonl
  (a resumed run keeps those up to its checkpoint) and TensorBoard (cfg.workdir/tb, tags loss, tokens,
  grad_norm, lr), and its curves to cfg.workdir/curves.html and curves.png at each checkpoint; with
  several processes only process 0 writes them. Returns {"model": the trained model, "history": one
  dict per step (step, loss, tokens, grad_norm, lr), "first_step_s": seconds of the first step
  (compile included), "steps_per_s": rate of the later steps, "resumed_from": step or None}.

  mesh (sharding.make_mesh): params and optimizer state are placed with sharding.param_shardings under
  `preset` (each Adam moment as its parameter, scalars replicated), every batch is split over the
  preset's batch axes where they divide it, and the donated state keeps its sharding step to step.
  Several processes (jax.distributed.initialize): each loads the same batches and feeds only its block of
  rows (text-only batches); the loss and updates equal one process's (tests/test_multihost.py).
  """
  graphdef = nnx.graphdef(model)
  frozen = tuple(getattr(cfg, "frozen", ()))
  unknown = [name for name in frozen if not hasattr(model, name)]
  if unknown:
    raise ValueError(f"cfg.frozen={frozen}: the model has no module {unknown[0]!r}")
  optimizer, step_fn = _cached_step(graphdef, tuple(getattr(cfg, k) for k in _OPTIMIZER_FIELDS), frozen)
  graphdef, rest, state = init_state(model, optimizer)
  group_by_grid = bool(getattr(cfg, "group_by_grid", False))
  dataset = make_dataset(examples, batch_size=cfg.batch_size, buckets=tuple(cfg.buckets), pad_id=pad_id,
                         seed=cfg.seed, group_by_grid=group_by_grid)
  iterator = iter(dataset)
  manager = ckpt.make_manager(os.path.join(cfg.workdir, "checkpoints"), keep=cfg.keep_checkpoints,
                              save_every=cfg.save_every)
  resumed_from = manager.latest_step()
  if resumed_from is not None:
    state, data_state = ckpt.restore(manager, state, resumed_from)
    iterator.set_state(data_state)
  if mesh is not None:
    state = jax.device_put(state, tree_shardings(state, mesh, preset))
    rest = jax.device_put(rest, tree_shardings(rest, mesh, preset))
  start = resumed_from or 0
  log = RunLog(cfg.workdir, desc="sft", total=cfg.steps, start=start, progress=progress)
  logged = log.earlier  # the rows before this run, for the curves
  history, pending = [], []
  first_step_s = steps_per_s = None
  tic = time.perf_counter()
  end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
  for step in range(start + 1, end + 1):
    batch = next(iterator)
    inputs, loss_mask = model_inputs(model.config, batch)
    features = batch_features(batch)
    if mesh is not None:
      if features is not None and jax.process_count() > 1:
        raise ValueError("precomputed vision features are not split over processes: train one process per run")
      inputs, loss_mask = shard_batch(inputs, loss_mask, mesh, preset)
    state, metrics = step_fn(state, rest, inputs, loss_mask, features)
    pending.append((step, metrics))
    if first_step_s is None:
      jax.block_until_ready(metrics)  # once, to tell compile time apart from step time
      first_step_s, tic = time.perf_counter() - tic, time.perf_counter()
    if step % cfg.log_every == 0 or step == end:
      rows = [{"step": s, **{k: float(v) for k, v in m.items()}} for s, m in jax.device_get(pending)]
      pending = []
      history += rows
      log.write(rows)
      last = history[-1]
      log.bar.set_postfix(loss=f"{last['loss']:.4f}")
      if progress:
        log.bar.write(f"step {step}: loss {last['loss']:.4f}  grad_norm {last['grad_norm']:.3f}  lr {last['lr']:.2e}  "
                  f"tokens {int(last['tokens'])}")
    saved = ckpt.save(manager, step, state, iterator.get_state(), force=step == end)
    if saved and log.primary and (logged or history):
      write_curves(os.path.join(cfg.workdir, "curves.html"), {"sft": logged + history}, title=f"SFT: {cfg.workdir}",
                   metrics=SFT_METRICS)
    log.bar.update(1)
  log.close()
  jax.block_until_ready(state)
  if end - start > 1:
    steps_per_s = (end - start - 1) / (time.perf_counter() - tic)
  manager.wait_until_finished()
  manager.close()

  trained = nnx.merge(graphdef, state.params, rest)
  if cfg.export_dir and end == cfg.steps:
    ckpt.export_pretrained(trained, cfg.export_dir, tokenizer_dir)
  return {"model": trained, "history": history, "first_step_s": first_step_s, "steps_per_s": steps_per_s,
          "resumed_from": resumed_from}
