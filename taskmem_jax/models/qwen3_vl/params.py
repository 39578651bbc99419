"""Hugging Face checkpoints <-> NNX parameters: from_pretrained, save_pretrained, init_random.

The mapping is derived from the model itself: every NNX parameter path has exactly one HF key and
one layout transform (``param_table``), so a new module needs no new loader code.
Loading reads one tensor at a time (peak host memory: the model plus one tensor) and reports every
unknown, missing or mis-shaped key at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx, traverse_util
from safetensors import safe_open

from taskmem_jax.io import atomic_write, atomic_write_json
from taskmem_jax.models.qwen3_vl.config import Qwen3VLConfig, validate
from taskmem_jax.models.qwen3_vl.model import Qwen3VLForConditionalGeneration
from taskmem_jax.models.qwen3_vl.text import SteerParam, default_steer_layers
from taskmem_jax.sharding import param_sharding

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# The official Phase-Two checkpoint (taskmem-spec.md §3.1): every decoder layer carries adapter.steer [H] (zero
# except the trained layer, already x1.5), and text_config names adapter_layers / adapter_dtype.
STEER_KEY = re.compile(r"model\.language_model\.layers\.(\d+)\.adapter\.steer")


class CheckpointError(ValueError):
  """A checkpoint that does not fit the model: missing files, unknown/missing keys, wrong shapes."""


class ParamSpec(NamedTuple):
  """One parameter: where it lives in NNX, its HF name, and how to convert between layouts."""
  path: tuple
  hf_key: str
  shape: tuple[int, ...]            # ours
  hf_shapes: tuple[tuple[int, ...], ...]  # accepted on load; the first is what save writes
  from_hf: Callable[[jax.Array], jax.Array]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _identity(x):
  return x


def _swap_last(x):
  return x.swapaxes(-1, -2)


def _spec(path: tuple, shape: tuple[int, ...], config: Qwen3VLConfig) -> ParamSpec:
  names = [str(p) for p in path]
  prefix = {"visual": "model.visual", "language_model": "model.language_model", "lm_head": "lm_head"}[names[0]]
  leaf = names[-1]
  if names[:3] == ["visual", "patch_embed", "kernel"] or names[:3] == ["visual", "patch_embed", "bias"]:
    # Conv3d [Dv, C, T, P, P] == Linear over flattened (C, T, P, P) patches.
    v = config.vision
    conv = (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    key = f"{prefix}.patch_embed.proj.{'weight' if leaf == 'kernel' else 'bias'}"
    if leaf == "bias":
      return ParamSpec(path, key, shape, (shape,), _identity, _identity)
    return ParamSpec(path, key, shape, (conv,), lambda w: w.reshape(conv[0], -1).T,
                     lambda w: w.T.reshape(conv))
  key = ".".join([prefix] + names[1:-1] + ["weight" if leaf == "kernel" else leaf])
  if leaf == "kernel":  # torch Linear stores [out, in]
    return ParamSpec(path, key, shape, (shape[::-1],), _swap_last, _swap_last)
  if leaf in ("gate_up_proj", "down_proj") and len(shape) == 3:
    # Ours (= Hub layout) is [E, in, out]; transformers 5 saves [E, out, in]. Told apart by shape, as
    # transformers 5 does: a square tensor is read in the transformers-5 layout (what save writes).
    v5 = (shape[0], shape[2], shape[1])
    return ParamSpec(path, key, shape, (v5, shape), lambda w: _swap_last(w) if w.shape == v5 else w,
                     _swap_last)
  return ParamSpec(path, key, shape, (shape,), _identity, _identity)


def param_table(config: Qwen3VLConfig, abstract_state: nnx.State) -> dict[str, ParamSpec]:
  """HF key -> ParamSpec for every parameter of the model."""
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(abstract_state))
  specs = [_spec(path, tuple(value.shape), config) for path, value in flat.items()]
  return {s.hf_key: s for s in specs}


class _ShapeOnlyKeys:
  """What the modules draw their initial values from (``rngs.params()``), for tracing shapes only: one key.

  nnx.Rngs counts its draws in a Variable; under a trace every update reads ``.sharding`` of a tracer, and
  JAX builds that AttributeError's message from the whole trace so far: quadratic in the model's size
  (about 20 s for the 235B preset, against 1 s with this)."""

  def params(self):
    return jax.random.key(0)


def abstract_model(config: Qwen3VLConfig, dtype=jnp.float32):
  """(graphdef, abstract state): shapes and dtypes only, no memory."""
  model = nnx.eval_shape(lambda: Qwen3VLForConditionalGeneration(config, dtype=dtype, rngs=_ShapeOnlyKeys()))
  return nnx.split(model)


def init_random(config: Qwen3VLConfig, seed: int = 0, dtype=jnp.float32) -> Qwen3VLForConditionalGeneration:
  """Random weights (normal std 0.02, unit norms), for tests and benchmarks."""
  return Qwen3VLForConditionalGeneration(config, dtype=dtype, rngs=nnx.Rngs(seed))


def count_params(config: Qwen3VLConfig) -> dict[str, int]:
  """Parameter counts from shapes alone (jax.eval_shape): total, vision, text, and active per token."""
  _, state = abstract_model(config, jnp.bfloat16)
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
  sizes = {path: math.prod(v.shape) for path, v in flat.items()}
  total = sum(sizes.values())
  vision = sum(n for p, n in sizes.items() if p[0] == "visual")
  experts = sum(n for p, n in sizes.items() if "experts" in p)
  t = config.text
  inactive = experts * (t.num_experts - t.num_experts_per_tok) // t.num_experts if t.is_moe else 0
  return {"total": total, "vision": vision, "text": total - vision, "active": total - inactive}


# --- loading ---------------------------------------------------------------------------------

def _weight_files(path: str) -> dict[str, str]:
  """HF key -> file that holds it."""
  single, index = os.path.join(path, SAFETENSORS), os.path.join(path, SAFETENSORS_INDEX)
  if os.path.isfile(index):
    try:
      with open(index, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
      raise CheckpointError(f"{index}: malformed index, expected a JSON object with 'weight_map' ({e!r})") from e
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
      raise CheckpointError(f"{index}: 'weight_map' must map tensor names to shard file names")
    files = {os.path.join(path, name) for name in weight_map.values()}
    missing = sorted(f for f in files if not os.path.isfile(f))
    if missing:
      raise CheckpointError(f"{index}: lists shard files that do not exist: {missing}")
    key_to_file = {}
    for file in sorted(files):  # trust the shard headers over the index
      key_to_file.update({k: file for k in _keys(file)})
    return key_to_file
  if os.path.isfile(single):
    return {k: single for k in _keys(single)}
  raise CheckpointError(f"{path}: no {SAFETENSORS} or {SAFETENSORS_INDEX} found")


def _keys(file: str) -> list[str]:
  try:
    with safe_open(file, framework="flax") as f:
      return list(f.keys())
  except Exception as e:  # safetensors raises its own error types for corrupt headers
    raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from e


def _read_slice(f, spec: ParamSpec, found: tuple[int, ...], index: tuple[slice, ...], dtype) -> np.ndarray:
  """Our-layout slice ``index`` of one tensor, reading from the file only what it needs (HF layout)."""
  swapped = spec.shape[:-2] + spec.shape[-2:][::-1]
  if spec.from_hf is _identity or (len(spec.hf_shapes) == 2 and spec.hf_shapes[0] == swapped
                                   and found != spec.hf_shapes[0]):
    return f.get_slice(spec.hf_key)[index].astype(dtype)
  if spec.from_hf is _swap_last or (len(spec.hf_shapes) == 2 and spec.hf_shapes[0] == swapped):
    # A transposed layout (torch Linear, transformers-5 experts): read the transposed slice.
    hf_index = tuple(index[:-2]) + tuple(index[-2:][::-1])
    return _swap_last(f.get_slice(spec.hf_key)[hf_index]).astype(dtype)
  # Any other transform (the Conv3d patch embedding, small): the whole tensor on the host, then slice.
  return np.asarray(spec.from_hf(f.get_tensor(spec.hf_key)))[index].astype(dtype)


def _load_sharded(by_file: dict[str, list[ParamSpec]], mesh, preset, dtype) -> dict[tuple, jax.Array]:
  """NNX path -> jax.Array placed in its NamedSharding, each device's slice read straight from the file."""
  values = {}
  for file, specs in by_file.items():
    with safe_open(file, framework="np") as f:
      for spec in specs:
        found = tuple(f.get_slice(spec.hf_key).get_shape())
        sharding = param_sharding(spec.path, spec.shape, mesh, preset)
        cache: dict = {}  # devices holding the same slice (replicated dims) share one read

        def read(index, f=f, spec=spec, found=found, cache=cache):
          key = tuple((s.start, s.stop, s.step) for s in index)
          if key not in cache:
            cache[key] = _read_slice(f, spec, found, index, dtype)
          return cache[key]

        values[spec.path] = jax.make_array_from_callback(spec.shape, sharding, read)
  return values


def from_pretrained(path: str | os.PathLike, dtype=jnp.bfloat16, *, mesh: jax.sharding.Mesh | None = None,
                    preset="fsdp", attention_impl: str | None = None,
                    remat: str | None = None) -> Qwen3VLForConditionalGeneration:
  """Loads a Hugging Face Qwen3-VL / Qwen3-VL-MoE checkpoint directory into NNX modules.

  Accepts model.safetensors or sharded model-*.safetensors with their index, both MoE expert
  layouts, and both config.json spellings. Parameters are cast to ``dtype``.

  mesh: place every parameter straight into its NamedSharding under ``preset`` (taskmem_jax.sharding:
  a preset name or a rules dict; the mesh from sharding.make_mesh). Each device's slice is read from the
  safetensors file on its own (jax.make_array_from_callback), so the whole model is never on one
  device; host memory peaks at one tensor (the distinct slices of the tensor being placed; the patch
  embedding, whose Conv3d layout does not slice, is read whole). Without a mesh: default device.
  attention_impl / remat: runtime choices for text and vision (config.TextConfig), overriding config.json's.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: checkpoint directory not found")
  config = Qwen3VLConfig.from_json_file(os.path.join(path, "config.json"))
  runtime = {k: v for k, v in (("attention_impl", attention_impl), ("remat", remat)) if v is not None}
  if runtime:
    config = config.replace(text=dataclasses.replace(config.text, **runtime),
                            vision=dataclasses.replace(config.vision, **runtime))
    validate(config)
  key_to_file = _weight_files(path)
  if config.tie_word_embeddings and "lm_head.weight" in key_to_file:
    config = config.replace(tie_word_embeddings=False)  # an explicit head wins over tying
  graphdef, abstract_state = abstract_model(config, dtype)
  table = param_table(config, abstract_state)
  steer_files = {k: key_to_file.pop(k) for k in [k for k in key_to_file if STEER_KEY.fullmatch(k)]}

  unknown = sorted(set(key_to_file) - set(table))
  missing = sorted(set(table) - set(key_to_file))
  problems = []
  for key, file in sorted(steer_files.items()):
    layer = int(STEER_KEY.fullmatch(key).group(1))
    with safe_open(file, framework="flax") as f:
      found = tuple(f.get_slice(key).get_shape())
    if layer >= config.text.num_hidden_layers or found != (config.text.hidden_size,):
      problems.append(f"{key}: a steer of shape {list(found)} at layer {layer}; the model has "
                      f"{config.text.num_hidden_layers} layers of hidden size {config.text.hidden_size}")
  if unknown:
    problems.append(f"{len(unknown)} unknown keys: {unknown}")
  if missing:
    problems.append(f"{len(missing)} missing keys: {missing}")
  by_file: dict[str, list[ParamSpec]] = {}
  for key, spec in table.items():
    if key in key_to_file:
      by_file.setdefault(key_to_file[key], []).append(spec)
  for file, specs in by_file.items():
    with safe_open(file, framework="flax") as f:
      for spec in specs:
        found = tuple(f.get_slice(spec.hf_key).get_shape())
        if found not in spec.hf_shapes:
          problems.append(f"shape mismatch for {spec.hf_key}: expected {list(spec.hf_shapes[0])}"
                          f"{' or ' + str(list(spec.hf_shapes[1])) if len(spec.hf_shapes) > 1 else ''}, "
                          f"found {list(found)} (in {os.path.basename(file)})")
  if problems:
    raise CheckpointError(f"{path}: checkpoint does not match the config:\n  " + "\n  ".join(problems))

  if mesh is not None:
    values = _load_sharded(by_file, mesh, preset, dtype)
  else:
    values = {}
    for file, specs in by_file.items():
      with safe_open(file, framework="flax") as f:
        for spec in specs:
          values[spec.path] = spec.from_hf(f.get_tensor(spec.hf_key)).astype(dtype)
  pure = traverse_util.unflatten_dict(values)
  nnx.replace_by_pure_dict(abstract_state, pure)
  model = nnx.merge(graphdef, abstract_state)
  if steer_files:
    _load_steer(model, steer_files)
  return model


def _load_steer(model: Qwen3VLForConditionalGeneration, steer_files: dict[str, str]) -> None:
  """The official checkpoint's per-layer adapter.steer vectors -> the model's steer (adapters/steer.py's
  layout: language_model.steer_layers, language_model.steer [n, H]): the layers whose vector is not zero (the
  trained ones), values as stored (the deployed steer, x1.5 included). All zero: a zero steer at the default
  layer. A non-finite value is an error naming its key."""
  vectors = {}
  for key, file in steer_files.items():
    with safe_open(file, framework="flax") as f:
      vector = np.asarray(f.get_tensor(key), np.float32)
    if not np.isfinite(vector).all():
      raise CheckpointError(f"{key}: non-finite steer value {vector[~np.isfinite(vector)][0]} (in {file})")
    vectors[int(STEER_KEY.fullmatch(key).group(1))] = vector
  lm = model.language_model
  layers = tuple(i for i in sorted(vectors) if np.any(vectors[i])) or default_steer_layers(lm.cfg.num_hidden_layers)
  values = np.stack([vectors.get(i, np.zeros(lm.cfg.hidden_size, np.float32)) for i in layers])
  lm.steer_layers = layers
  lm.steer = SteerParam(jnp.asarray(values, model.dtype))


# --- saving ----------------------------------------------------------------------------------

def save_pretrained(model: Qwen3VLForConditionalGeneration, path: str | os.PathLike,
                    max_shard_bytes: int = 5 * 1024**3, *, steer: bool = False) -> None:
  """Writes config.json and safetensors (sharded with an index above max_shard_bytes) that
  transformers' Qwen3VL(Moe)ForConditionalGeneration.from_pretrained loads. Files are written to
  temporary names and renamed, so a crash never leaves a half-written checkpoint in place.

  steer: also write the model's steer in the official Phase-Two layout (every decoder layer's
  adapter.steer [H] in the model's dtype, zero except the steered layers; text_config adapter_layers "all",
  adapter_dtype), which the official vLLM plugin serves and from_pretrained reads back. Without it the steer
  is left out (adapters/steer.py saves it on its own). The values are written as they are: scale them first
  (steer.scale, the official x1.5) if the checkpoint is for deployment.
  """
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)
  config = model.config
  state = nnx.state(model, nnx.All(nnx.Param, nnx.Not(SteerParam)))  # a steer is saved on its own
  table = param_table(config, state)
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))

  arrays = {key: (lambda spec=spec: np.asarray(spec.to_hf(np.asarray(flat[spec.path])))) for key, spec in table.items()}
  if steer:
    layers = tuple(getattr(model.language_model, "steer_layers", ()))
    if not layers:
      raise ValueError("save_pretrained(steer=True): the model has no steer (adapters.steer.add_steer)")
    values = np.asarray(model.language_model.steer[...], np.float32)
    np_dtype = np.asarray(flat[next(iter(table.values())).path]).dtype
    for i in range(config.text.num_hidden_layers):
      vector = values[layers.index(i)] if i in layers else np.zeros(config.text.hidden_size, np.float32)
      arrays[f"model.language_model.layers.{i}.adapter.steer"] = lambda v=vector: v.astype(np_dtype)

  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for key in sorted(arrays):
    array = arrays[key]()
    if shards[-1] and size + array.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][key] = np.ascontiguousarray(array)
    size += array.nbytes

  names = [SAFETENSORS] if len(shards) == 1 else [
      f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  for name, shard in zip(names, shards):
    atomic_write(os.path.join(path, name), lambda tmp, shard=shard: safetensors.numpy.save_file(
        shard, tmp, metadata={"format": "pt"}))
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(a.nbytes for s in shards for a in s.values())},
             "weight_map": {k: name for name, s in zip(names, shards) for k in s}}
    atomic_write_json(os.path.join(path, SAFETENSORS_INDEX), index, sort_keys=True)
  # Weight files of an earlier save that the new one does not name would only confuse readers.
  keep = set(names) | ({SAFETENSORS_INDEX} if len(shards) > 1 else set())
  for name in os.listdir(path):
    if name not in keep and (name in (SAFETENSORS, SAFETENSORS_INDEX)
                             or re.fullmatch(r"model-\d+-of-\d+\.safetensors", name)):
      os.remove(os.path.join(path, name))
  hf_config = config.to_hf_dict()
  hf_config["dtype"] = {"bfloat16": "bfloat16", "float16": "float16"}.get(str(model.dtype), "float32")
  if steer:
    hf_config["text_config"].update(adapter_layers="all", adapter_dtype=hf_config["dtype"])
  atomic_write_json(os.path.join(path, "config.json"), hf_config, sort_keys=True)
