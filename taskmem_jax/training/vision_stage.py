"""Vision stage: train the vision tower on dense per-token labels before supervised fine-tuning.

A linear probe reads each merged vision token (the main merger's output, what the language model
receives, and likewise each DeepStack merger's output) and predicts K categorical labels per token; the
loss is their mean cross entropy, summed over the probes. Only the tower (model.visual) and the probes
learn; the probes are dropped afterwards. This is the tiny model's
stand-in for a real Qwen3-VL's vision pretraining: SynthWorld's from-scratch tower, trained through the
language model's loss alone, learns to ignore the video (experiments/make_sft_data.py, measured).

Data: a sequence of clips, each (pixel_values [N, C*T*P*P], grid_thw [3], labels int [N / merge^2, K]),
all with one grid (one compile). Batch b of step s is drawn by numpy's default_rng([seed, s]), so a
resumed run draws exactly what a straight run does; orbax checkpoints (training/checkpoint.py) hold the
tower, the probe, the optimizer and the step. The metrics go to TensorBoard events in workdir/tb.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from taskmem_jax.models.qwen3_vl.positions import vision_metadata
from taskmem_jax.training import checkpoint as ckpt
from taskmem_jax.training.run_log import RunLog


class ProbeHead(nnx.Module):
  """Merged token features [M, H] -> logits [M, sum(classes)], split per label column."""

  def __init__(self, hidden: int, classes: Sequence[int], *, rngs: nnx.Rngs):
    self.classes = tuple(int(c) for c in classes)
    self.linear = nnx.Linear(hidden, sum(self.classes), rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    return self.linear(features)


class Probes(nnx.Module):
  """One ProbeHead per vision output: the main merger's features and each DeepStack merger's (the
  language model adds those to its first layers' states at the vision positions, so they must carry
  the video too, not stay random projections)."""

  def __init__(self, hidden: int, classes: Sequence[int], num_outputs: int, *, rngs: nnx.Rngs):
    self.heads = nnx.List([ProbeHead(hidden, classes, rngs=rngs) for _ in range(num_outputs)])


class VisionState(NamedTuple):
  step: jax.Array
  params: Any  # (tower, probe) nnx.Param state
  opt_state: Any


def _column_losses(logits: jax.Array, labels: jax.Array, classes: tuple[int, ...]):
  """logits [M, sum(classes)], labels int [M, K] -> (mean cross entropy, correct bool [M, K]).

  The K columns are gathered into one [M, K, max(classes)] block, the classes a column lacks masked out: one
  softmax rather than K (K is ~100 for SynthWorld's labels, and K small ones took ~50 s to compile)."""
  index, valid = _column_index(classes)
  columns = jnp.where(valid, logits[:, index], -1e30)  # [M, K, C]
  losses = optax.softmax_cross_entropy_with_integer_labels(columns, labels)
  return losses.mean(), columns.argmax(-1) == labels


def _column_index(classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  """[K, max(classes)] index of each column's classes in the concatenated logits, and which are real."""
  width = max(classes)
  offsets = np.cumsum((0,) + classes[:-1])
  valid = np.arange(width)[None] < np.asarray(classes)[:, None]
  return np.where(valid, offsets[:, None] + np.arange(width)[None], 0), valid


def _check_clips(clips, classes):
  pixels, grid, labels = clips[0]
  grid = np.asarray(grid).reshape(3)
  if labels.ndim != 2 or labels.shape[1] != len(classes):
    raise ValueError(f"clip 0: labels shape {labels.shape}; expected [tokens, {len(classes)}] (one column per class count)")
  return grid


def train_vision_stage(cfg, model, clips: Sequence, classes: Sequence[int], *, progress: bool = True) -> dict:
  """Trains model.visual in place on `clips` (module docstring) for cfg.steps steps; resumes from
  cfg.workdir/checkpoints when a checkpoint is there.

  cfg fields: steps, batch_size, lr, warmup_steps, end_lr_ratio, weight_decay, grad_clip, seed,
  log_every, save_every, workdir. Returns {"history": [{"step", "loss", "accuracy", "token_accuracy",
  "grad_norm", "lr"}] (accuracy: share of labels right; token_accuracy: share of tokens with every label
  right; grad_norm before clipping; lr of the step), "resumed_from": step or None}. The rows are also
  written at each log point to TensorBoard (cfg.workdir/tb, one tag per key).
  """
  classes = tuple(int(c) for c in classes)
  if len(clips) < cfg.batch_size:
    raise ValueError(f"{len(clips)} clips cannot fill a batch of {cfg.batch_size}")
  grid = _check_clips(clips, classes)
  vision = model.config.vision
  meta = vision_metadata(np.tile(grid, (cfg.batch_size, 1)), vision)
  probe = Probes(vision.out_hidden_size, classes, 1 + len(vision.deepstack_visual_indexes), rngs=nnx.Rngs(cfg.seed))
  graphdef, params = nnx.split((model.visual, probe), nnx.Param)
  schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, max(cfg.steps, cfg.warmup_steps + 1),
                                                end_value=cfg.lr * cfg.end_lr_ratio)
  optimizer = optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                          optax.adamw(schedule, weight_decay=cfg.weight_decay,
                                      mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
  state = VisionState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  def loss_fn(params, pixels, labels):
    tower, probes = nnx.merge(graphdef, params)
    features, deepstack = tower(pixels, meta)
    main_loss, correct = _column_losses(probes.heads[0](features), labels, classes)
    deep_loss = sum(_column_losses(head(d), labels, classes)[0] for head, d in zip(probes.heads[1:], deepstack))
    return main_loss + deep_loss, correct  # accuracy: the main features

  @jax.jit
  def step_fn(state: VisionState, pixels, labels):
    (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, pixels, labels)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    metrics = {"loss": loss, "accuracy": correct.mean(), "token_accuracy": correct.all(-1).mean(),
               "grad_norm": optax.global_norm(grads), "lr": jnp.asarray(schedule(state.step), jnp.float32)}
    return VisionState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), metrics

  manager = ckpt.make_manager(os.path.join(cfg.workdir, "checkpoints"), keep=1, save_every=cfg.save_every)
  resumed_from = manager.latest_step()
  if resumed_from is not None:
    state, _ = ckpt.restore(manager, state, resumed_from)
  log = RunLog(cfg.workdir, desc="vision stage", total=cfg.steps, start=resumed_from or 0, progress=progress,
               jsonl=False)
  history, pending = [], []
  for step in range(int(state.step) + 1, cfg.steps + 1):
    rows = np.random.default_rng([cfg.seed, step]).choice(len(clips), cfg.batch_size, replace=False)
    batch = [clips[int(i)] for i in rows]
    for pixels, g, _ in batch:
      if not np.array_equal(np.asarray(g).reshape(3), grid):
        raise ValueError(f"clip grids differ ({np.asarray(g).tolist()} vs {grid.tolist()}): the vision stage "
                         "batches clips of one grid")
    pixels = np.concatenate([b[0] for b in batch]).astype(np.float32)
    labels = np.concatenate([b[2] for b in batch]).astype(np.int32)
    state, metrics = step_fn(state, pixels, labels)
    pending.append((step, metrics))
    if step % cfg.log_every == 0 or step == cfg.steps:
      rows = [{"step": s, **{k: float(v) for k, v in m.items()}} for s, m in jax.device_get(pending)]
      history += rows
      log.write(rows)
      pending = []
      log.bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", acc=f"{history[-1]['accuracy']:.4f}")
    ckpt.save(manager, step, state, {}, force=step == cfg.steps)
    log.bar.update(1)
  log.close()
  manager.wait_until_finished()
  manager.close()
  tower, _ = nnx.merge(graphdef, state.params)
  nnx.update(model.visual, nnx.state(tower, nnx.Param))
  return {"history": history, "resumed_from": resumed_from}


def evaluate_vision_stage(model, clips: Sequence, classes: Sequence[int], *, seed: int = 0, steps: int = 300,
                          lr: float = 3e-3, batch_size: int = 8) -> float:
  """Held-out accuracy of a freshly fitted linear probe on the frozen tower (how linearly readable its
  features are): fits the probe on the first half of `clips`, returns label accuracy on the rest."""
  classes = tuple(int(c) for c in classes)
  grid = _check_clips(clips, classes)
  meta1 = vision_metadata(grid[None], model.config.vision)
  encode = jax.jit(lambda pixels: model.visual(pixels, meta1)[0])
  feats = [(np.asarray(encode(np.asarray(c[0], np.float32))), np.asarray(c[2])) for c in clips]
  half = len(feats) // 2
  probe = ProbeHead(model.config.vision.out_hidden_size, classes, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(probe, nnx.Param)
  optimizer = optax.adam(lr)
  opt_state = optimizer.init(params)

  @jax.jit
  def fit(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(lambda p: _column_losses(nnx.merge(graphdef, p)(x), y, classes)[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    rows = rng.choice(half, min(batch_size, half), replace=False)
    params, opt_state = fit(params, opt_state, np.concatenate([feats[i][0] for i in rows]),
                            np.concatenate([feats[i][1] for i in rows]))
  x = np.concatenate([f[0] for f in feats[half:]])
  y = np.concatenate([f[1] for f in feats[half:]])
  return float(_column_losses(nnx.merge(graphdef, params)(x), y, classes)[1].mean())
