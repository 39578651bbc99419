"""Orbax checkpoints of the training state + the data iterator, and the final HF export.

The train state is saved as a flat {key path: array} dict and restored into the target tree's
structure: orbax restores nnx.List integer keys as strings unless it has a target
(research/jax-anchors.md §2), and flat keys keep optax/NNX container types out of the file format.
"""

from __future__ import annotations

import os
import shutil

import jax
import orbax.checkpoint as ocp

from taskmem_jax.models import qwen3_vl

# Files of an HF checkpoint that save_pretrained does not write (tokenizer, chat template, ...).
_MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")


def _flat(tree) -> dict[str, jax.Array]:
  return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def make_manager(directory: str, *, keep: int, save_every: int) -> ocp.CheckpointManager:
  """Keeps the last `keep` checkpoints; `save` writes every `save_every` steps (orbax writes atomically)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, save_interval_steps=save_every, create=True,
      # Synchronous: the step donates the state's buffers right after a save returns.
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, train_state, data_state: dict, *, force: bool = False) -> bool:
  """Saves at `step` when the interval says so (or force); returns whether it saved."""
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_flat(train_state)),
                                                    data=ocp.args.JsonSave(data_state)), force=force)


def restore(manager: ocp.CheckpointManager, target, step: int | None = None):
  """(train state shaped like `target`, data iterator state) of `step` (default: the latest).

  target: the train state, or its jax.eval_shape; it gives structure, shapes and dtypes.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{manager.directory}: no checkpoint to restore")
  # A target's shardings are kept, so every leaf is read straight into its shards (each process its own).
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
                          target)
  flat_target = _flat(abstract)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(flat_target),
                                                           data=ocp.args.JsonRestore()))
  flat = restored["state"]
  missing = sorted(set(flat_target) - set(flat))
  if missing:
    raise ValueError(f"{manager.directory}/{step}: checkpoint lacks {len(missing)} entries, e.g. {missing[:3]}")
  leaves = [flat[k] for k in flat_target]
  return jax.tree.unflatten(jax.tree.structure(abstract), leaves), restored["data"]


def export_pretrained(model, out_dir: str, tokenizer_dir: str | None = None) -> None:
  """save_pretrained(model) into out_dir and copies the tokenizer files of tokenizer_dir (usually the
  checkpoint training started from), so qwen3_vl.from_pretrained and the processor load out_dir."""
  qwen3_vl.save_pretrained(model, out_dir)
  if tokenizer_dir and os.path.abspath(tokenizer_dir) != os.path.abspath(out_dir):
    for name in sorted(os.listdir(tokenizer_dir)):
      source = os.path.join(tokenizer_dir, name)
      if (os.path.isfile(source) and name not in _MODEL_FILES and not name.endswith(".safetensors")
          and not name.startswith(".")):
        shutil.copy2(source, os.path.join(out_dir, name))
