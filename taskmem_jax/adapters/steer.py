"""The Phase-Two steer adapter: one vector of the hidden size per chosen decoder layer, added to that
layer's output at every position (prompt, vision and generated tokens), the backbone frozen
(taskmem-spec.md §3.1; TaskMem modeling/qwen3hf_ada.py).

The vectors live in their own NNX variable type, SteerParam, on the text model (language_model.steer
[n_layers, H], language_model.steer_layers a static tuple). So

    graphdef, steer, backbone, rest = nnx.split(model, SteerParam, nnx.Param, ...)

gives the trainable tree alone; gradients, optimizer state and checkpoints exist for it only, and the
DPO reference is the same graphdef merged with a zero steer (no second copy of the weights). Swapping
one task's steer for another's changes values, not the graph, so nothing recompiles.

The released checkpoint steers layer 22 of 48 (2,048 parameters on Qwen3-VL-30B-A3B); other depths
default to the same relative depth. Zero initialised. After training the official recipe scales the
vector by 1.5 before deployment (`scale`).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taskmem_jax.io import atomic_write
from taskmem_jax.models.qwen3_vl.text import SteerParam, default_steer_layers


class SteerError(ValueError):
  """A bad layer choice, a non-finite steer, or a steer file that does not fit the model."""


default_layers = default_steer_layers  # (22,) for 48 layers; the same relative depth otherwise


def add_steer(model, layers: Sequence[int] | None = None):
  """Gives `model` (Qwen3VLForConditionalGeneration) a zero steer at `layers` (default: default_layers);
  returns the model. A model that already has one keeps its values only if the layers match."""
  lm = model.language_model
  n = lm.cfg.num_hidden_layers
  layers = default_layers(n) if layers is None else tuple(int(i) for i in layers)
  if not layers or len(set(layers)) != len(layers) or any(not 0 <= i < n for i in layers):
    raise SteerError(f"steer layers {layers}: need distinct layers in [0, {n})")
  layers = tuple(sorted(layers))
  if getattr(lm, "steer_layers", None) == layers:
    return model
  lm.steer_layers = layers
  lm.steer = SteerParam(jnp.zeros((len(layers), lm.cfg.hidden_size), model.dtype))
  return model


def steer_layers(model) -> tuple[int, ...]:
  return tuple(getattr(model.language_model, "steer_layers", ()))


def _require(model):
  if not steer_layers(model):
    raise SteerError("the model has no steer adapter; call add_steer(model, layers) first")


def check_finite(values, where: str = "steer") -> None:
  values = np.asarray(values, np.float32)
  if not np.isfinite(values).all():
    bad = np.argwhere(~np.isfinite(values))[0].tolist()
    raise SteerError(f"{where}: non-finite value {values[tuple(bad)]} at index {bad}; a steer must be finite")


def get_steer(model) -> np.ndarray:
  """The steer values, float32 [n_layers, H]."""
  _require(model)
  return np.asarray(model.language_model.steer[...], np.float32)


def set_steer(model, values) -> None:
  """Replaces the steer values in place (same shape; a swap never recompiles). Raises on non-finite."""
  _require(model)
  values = np.asarray(values)
  expected = model.language_model.steer[...].shape
  if values.shape != expected:
    raise SteerError(f"steer values of shape {values.shape}; the model's steer is {expected} "
                     f"(layers {steer_layers(model)})")
  check_finite(values)
  model.language_model.steer[...] = jnp.asarray(values, model.language_model.steer[...].dtype)


def scale(values, factor: float = 1.5) -> np.ndarray:
  """The official post-training amplification: steer * factor."""
  return np.asarray(values, np.float32) * factor


def split(model):
  """(graphdef, steer tree, frozen backbone params, rest)."""
  _require(model)
  return nnx.split(model, SteerParam, nnx.Param, ...)


def num_trainable(model_or_abstract) -> int:
  """Elements of the steer tree."""
  _, steer, _, _ = nnx.split(model_or_abstract, SteerParam, nnx.Param, ...)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(steer))


# --- files --------------------------------------------------------------------------------------

def save(model, path: str | os.PathLike, *, metadata: dict | None = None) -> None:
  """Writes the steer alone as a small safetensors file (tensor "steer" [n_layers, H] float32; the layers
  and `metadata` in the header), atomically."""
  from safetensors.numpy import save_file

  values = get_steer(model)
  check_finite(values)
  header = {"layers": json.dumps(list(steer_layers(model))), "hidden_size": str(values.shape[1]),
            **{k: str(v) for k, v in (metadata or {}).items()}}
  atomic_write(path, lambda tmp: save_file({"steer": values}, tmp, metadata=header))


def load(model, path: str | os.PathLike) -> dict:
  """Puts the steer saved at `path` into `model` (adding the adapter at the saved layers if needed);
  returns the file's metadata."""
  from safetensors import safe_open

  path = os.fspath(path)
  if not os.path.isfile(path):
    raise SteerError(f"steer file not found: {path}")
  with safe_open(path, "np") as f:
    meta = f.metadata() or {}
    if "steer" not in f.keys() or "layers" not in meta:
      raise SteerError(f"{path}: not a steer file (needs tensor 'steer' and a 'layers' header entry)")
    values = f.get_tensor("steer")
  layers = tuple(json.loads(meta["layers"]))
  hidden = model.language_model.cfg.hidden_size
  if values.ndim != 2 or values.shape != (len(layers), hidden):
    raise SteerError(f"{path}: steer of shape {values.shape} for layers {layers}; the model needs "
                     f"[{len(layers)}, {hidden}]")
  check_finite(values, path)
  add_steer(model, layers)
  set_steer(model, values)
  return meta
