"""Logical sharding of Qwen3-VL: parameter paths -> logical axes -> mesh axes, for a few mesh presets.

Why two steps: the model code knows nothing about devices. Each parameter's dimensions get a *logical*
name from its NNX path alone (``logical_axes``, derived the way ``params.param_table`` derives HF keys),
and a preset's *rules* map logical names onto the axes of one 4-axis mesh ("data", "fsdp", "expert",
"tensor"). Changing the parallelism is then a different preset (or rules dict), never a model edit.

Presets (``make_mesh`` picks the mesh shape from the device count n; every mesh has all four axes, the
unused ones of size 1, so one set of rules fits any preset):

  single       (1, 1, 1, 1)        one device, everything replicated.
  fsdp         (1, n, 1, 1)        every weight split over "fsdp" along its model dimension ("embed",
                                   "vision_embed"; the merger's 4*Dv input): ZeRO-3 style, gathered per use.
  fsdp_tensor  (1, n/t, 1, t)      fsdp as above, plus Megatron-style tensor parallelism: heads, MLP,
                                   vocab (and the vision tower's) over "tensor"; the MoE experts over
                                   "tensor" too (expert parallel: each device runs its own experts). t = the largest power of 2
                                   with t * t <= n (8 -> 2, 16 -> 4, 64 -> 8); override with tensor=.
  expert       (1, n/e, e, 1)      MoE experts over "expert"; every other weight split over "fsdp" and
                                   "expert" together (the expert devices double as FSDP devices for the
                                   dense part). e = n by default; override with expert=.

A dimension is split only when the product of its mesh axes divides it; otherwise the trailing mesh
axes are dropped until it does (replicated at worst), and a mesh axis already used by an earlier
dimension of the same parameter is skipped. Size-1 mesh axes are left out of the PartitionSpec.

Batch-like activations [B, L, H] are split over the batch axes (data + fsdp, + expert in the expert
preset) and replicated over L and H (``activation_sharding``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from typing import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "expert", "tensor")
PRESETS = ("single", "fsdp", "fsdp_tensor", "expert")

# Logical axis names. Text: embed = hidden size H; vocab = V; heads = num_heads * head_dim (q and the
# o_proj input), kv_heads = num_kv_heads * head_dim; head_dim = one head (q/k norms); mlp = the dense
# SwiGLU width; experts = E; expert_mlp = the expert width (2*I fused gate/up, or I); router = E as the
# router's output. Vision: vision_embed = Dv; vision_qkv = 3*Dv fused; vision_heads = Dv as attention
# output; vision_mlp; vision_patch = C*T*P*P; vision_pos = the learned position table; vision_merge =
# 4*Dv (merger input); vision_merge_mlp = the merger's hidden width. norm = any norm weight/bias;
# steer_layers / steer = Phase-Two steer vectors. batch / length = activations.
LOGICAL_AXES = frozenset({
    "embed", "vocab", "heads", "kv_heads", "head_dim", "mlp", "experts", "expert_mlp", "router", "norm",
    "vision_embed", "vision_qkv", "vision_heads", "vision_mlp", "vision_patch", "vision_pos", "vision_merge",
    "vision_merge_mlp", "steer_layers", "steer", "batch", "length"})

_LAYER = "language_model.layers.*."
_BLOCK = "visual.blocks.*."
_TABLE: dict[str, tuple[str, ...]] = {
    "language_model.embed_tokens.weight": ("vocab", "embed"),
    "language_model.norm.weight": ("norm",),
    "language_model.steer": ("steer_layers", "steer"),
    "lm_head.kernel": ("embed", "vocab"),
    _LAYER + "input_layernorm.weight": ("norm",),
    _LAYER + "post_attention_layernorm.weight": ("norm",),
    _LAYER + "self_attn.q_proj.kernel": ("embed", "heads"),
    _LAYER + "self_attn.k_proj.kernel": ("embed", "kv_heads"),
    _LAYER + "self_attn.v_proj.kernel": ("embed", "kv_heads"),
    _LAYER + "self_attn.o_proj.kernel": ("heads", "embed"),
    _LAYER + "self_attn.q_norm.weight": ("head_dim",),
    _LAYER + "self_attn.k_norm.weight": ("head_dim",),
    _LAYER + "mlp.gate_proj.kernel": ("embed", "mlp"),
    _LAYER + "mlp.up_proj.kernel": ("embed", "mlp"),
    _LAYER + "mlp.down_proj.kernel": ("mlp", "embed"),
    _LAYER + "mlp.gate.kernel": ("embed", "router"),
    _LAYER + "mlp.experts.gate_up_proj": ("experts", "embed", "expert_mlp"),  # [E, H, 2I]
    _LAYER + "mlp.experts.down_proj": ("experts", "expert_mlp", "embed"),     # [E, I, H]
    "visual.patch_embed.kernel": ("vision_patch", "vision_embed"),
    "visual.patch_embed.bias": ("vision_embed",),
    "visual.pos_embed.weight": ("vision_pos", "vision_embed"),
    _BLOCK + "norm1.weight": ("norm",),
    _BLOCK + "norm1.bias": ("norm",),
    _BLOCK + "norm2.weight": ("norm",),
    _BLOCK + "norm2.bias": ("norm",),
    _BLOCK + "attn.qkv.kernel": ("vision_embed", "vision_qkv"),
    _BLOCK + "attn.qkv.bias": ("vision_qkv",),
    _BLOCK + "attn.proj.kernel": ("vision_heads", "vision_embed"),
    _BLOCK + "attn.proj.bias": ("vision_embed",),
    _BLOCK + "mlp.linear_fc1.kernel": ("vision_embed", "vision_mlp"),
    _BLOCK + "mlp.linear_fc1.bias": ("vision_mlp",),
    _BLOCK + "mlp.linear_fc2.kernel": ("vision_mlp", "vision_embed"),
    _BLOCK + "mlp.linear_fc2.bias": ("vision_embed",),
}
for _merger in ("visual.merger.", "visual.deepstack_merger_list.*."):
  _TABLE.update({
      _merger + "norm.weight": ("norm",),  # Dv (merger) or 4*Dv (DeepStack, post-shuffle norm)
      _merger + "norm.bias": ("norm",),
      _merger + "linear_fc1.kernel": ("vision_merge", "vision_merge_mlp"),
      _merger + "linear_fc1.bias": ("vision_merge_mlp",),
      _merger + "linear_fc2.kernel": ("vision_merge_mlp", "embed"),
      _merger + "linear_fc2.bias": ("embed",),
  })

_FSDP = {"embed": "fsdp", "vision_embed": "fsdp", "vision_merge": "fsdp", "batch": ("data", "fsdp")}
# Experts over "tensor" (expert parallelism on the tensor axis, models/qwen3_vl/moe.py), not their width: the
# fused gate/up columns split over "tensor" would leave gate and up halves on different devices.
_TENSOR = {name: "tensor" for name in ("vocab", "heads", "kv_heads", "mlp", "experts", "vision_qkv",
                                       "vision_heads", "vision_mlp", "vision_merge_mlp")}
# Logical name -> mesh axis or tuple of mesh axes (split over their product); names left out replicate.
RULES: dict[str, dict[str, str | tuple[str, ...]]] = {
    "single": {},
    "fsdp": dict(_FSDP),
    "fsdp_tensor": {**_FSDP, **_TENSOR},
    "expert": {"experts": "expert", "embed": ("fsdp", "expert"), "vision_embed": ("fsdp", "expert"),
               "vision_merge": ("fsdp", "expert"), "batch": ("data", "fsdp", "expert")},
}


def zero_rules(preset: str | Mapping) -> dict:
  """The preset's rules with "data" added to the FSDP-split logical axes (embed, vision_embed,
  vision_merge): optimizer moments laid out this way on a data_parallel_mesh are split over the processes
  as well (ZeRO-1 across hosts) while the parameters stay one copy per process. Where "data" does not
  divide a dimension it is dropped (spec_for), leaving the preset's layout."""
  rules = dict(_rules(preset))
  for name in ("embed", "vision_embed", "vision_merge"):
    target = rules.get(name, ())
    target = (target,) if isinstance(target, str) else tuple(target)
    rules[name] = target + ("data",)
  return rules


def _rules(preset: str | Mapping) -> Mapping:
  if isinstance(preset, Mapping):
    unknown = sorted(set(preset) - LOGICAL_AXES)
    if unknown:
      raise ValueError(f"sharding rules name unknown logical axes {unknown}; known: {sorted(LOGICAL_AXES)}")
    return preset
  if preset not in RULES:
    raise ValueError(f"sharding preset={preset!r}: unknown; choose one of {list(PRESETS)}")
  return RULES[preset]


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def logical_axes(path: Sequence, shape: Sequence[int]) -> tuple[str, ...]:
  """Logical axis names of one parameter, one per dimension, from its NNX path (e.g. ("language_model",
  "layers", 3, "mlp", "gate_proj", "kernel")) and shape. Raises ValueError naming the path when the path
  is unknown or the rank does not match."""
  name = ".".join(str(p) for p in path)
  pattern = re.sub(r"(?<=\.)\d+(?=\.)", "*", name)
  axes = _TABLE.get(pattern)
  if axes is None:
    raise ValueError(f"no logical sharding axes for parameter {name!r} (shape {tuple(shape)}); "
                     "add its path to taskmem_jax/sharding.py _TABLE")
  if len(axes) != len(shape):
    raise ValueError(f"parameter {name!r}: shape {tuple(shape)} has rank {len(shape)}, but its logical axes "
                     f"{axes} have rank {len(axes)}")
  return axes


def spec_for(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, preset: str | Mapping) -> PartitionSpec:
  """PartitionSpec for logical axes and a shape under a preset's rules. A dimension is split only by
  mesh axes whose product divides it (trailing axes dropped until one does); each mesh axis once."""
  rules, used, out = _rules(preset), set(), []
  for name, size in zip(axes, shape):
    target = rules.get(name) if name is not None else None
    target = (target,) if isinstance(target, str) else tuple(target or ())
    target = [a for a in target if a not in used and mesh.shape.get(a, 1) > 1]
    while target and size % math.prod(mesh.shape[a] for a in target):
      target.pop()
    used.update(target)
    out.append(None if not target else target[0] if len(target) == 1 else tuple(target))
  while out and out[-1] is None:
    out.pop()
  return PartitionSpec(*out)


def param_sharding(path: Sequence, shape: Sequence[int], mesh: Mesh, preset: str | Mapping) -> NamedSharding:
  """NamedSharding of one parameter (path as in ``logical_axes``)."""
  return NamedSharding(mesh, spec_for(logical_axes(path, shape), shape, mesh, preset))


def _path(keys) -> tuple:
  names = [_key_name(k) for k in keys]
  return tuple(names[:-1]) if names and names[-1] == "value" else tuple(names)  # nnx.Variable's leaf


def param_shardings(tree, mesh: Mesh, preset: str | Mapping = "fsdp"):
  """A tree of NamedSharding shaped like ``tree``: an nnx.Module (its nnx.state), an nnx.State (abstract,
  from nnx.eval_shape, or concrete) or a nested dict of arrays / ShapeDtypeStructs (nnx.to_pure_dict).
  ``jax.device_put(state, param_shardings(state, mesh))`` places a state."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree)
  return jax.tree_util.tree_map_with_path(
      lambda keys, leaf: param_sharding(_path(keys), leaf.shape, mesh, preset), tree)


def activation_sharding(mesh: Mesh, preset: str | Mapping = "fsdp", shape: Sequence[int] | None = None,
                        axes: Sequence[str | None] = ("batch", "length", None)) -> NamedSharding:
  """NamedSharding of an activation, by default [B, L, H] with B over the preset's batch axes. With
  ``shape``, a B the batch axes do not divide falls back as for parameters; without, the caller ensures it."""
  if shape is None:
    rules = _rules(preset)
    target = rules.get("batch", ())
    target = tuple(a for a in ((target,) if isinstance(target, str) else target) if mesh.shape.get(a, 1) > 1)
    head = None if not target else target[0] if len(target) == 1 else target
    return NamedSharding(mesh, PartitionSpec(head) if head else PartitionSpec())
  return NamedSharding(mesh, spec_for(axes, shape, mesh, preset))


def mesh_shape(preset: str, n: int, *, tensor: int | None = None, expert: int | None = None) -> tuple[int, ...]:
  """The (data, fsdp, expert, tensor) sizes make_mesh gives ``n`` devices for a preset (no devices needed,
  so plan.py can use it for hardware it does not have)."""
  if preset not in RULES:
    raise ValueError(f"sharding preset={preset!r}: unknown; choose one of {list(PRESETS)}")
  t = e = 1
  if preset == "single":
    n = 1
  elif preset == "fsdp_tensor":
    t = tensor or max(2 ** k for k in range(n.bit_length()) if 4 ** k <= n and n % 2 ** k == 0)
  elif preset == "expert":
    e = expert or n
  if n % (t * e):
    raise ValueError(f"mesh preset={preset!r}: tensor={t} x expert={e} must divide the {n} devices")
  return (1, n // (t * e), e, t)


def make_mesh(preset: str = "fsdp", devices: Sequence | None = None, *, tensor: int | None = None,
              expert: int | None = None) -> Mesh:
  """A ("data", "fsdp", "expert", "tensor") mesh over ``devices`` (default jax.devices()) for a preset;
  shapes as in the module docstring. "single" uses the first device only."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(preset, len(devices), tensor=tensor, expert=expert)
  return Mesh(np.asarray(devices[:math.prod(shape)]).reshape(shape), MESH_AXES)


def data_parallel_mesh(preset: str = "fsdp", *, tensor: int | None = None, expert: int | None = None) -> Mesh:
  """A ("data", "fsdp", "expert", "tensor") mesh with "data" over processes: slice k is process k's local
  devices laid out by the preset (sharding.make_mesh over them), so a parameter sharded by the preset's
  rules (which never name "data") is one full copy per process, split over that process's devices."""
  groups: dict[int, list] = {}
  for d in jax.devices():
    groups.setdefault(d.process_index, []).append(d)
  sizes = {len(g) for g in groups.values()}
  if len(sizes) != 1:
    raise ValueError(f"data_parallel_mesh: processes hold different device counts {sorted(sizes)}")
  slices = [make_mesh(preset, sorted(groups[k], key=lambda d: d.id), tensor=tensor, expert=expert).devices
            for k in sorted(groups)]
  return Mesh(np.concatenate(slices, axis=0), MESH_AXES)


def mesh_from_config(mesh_cfg, per_process: bool = False) -> tuple[Mesh | None, str]:
  """(mesh or None, preset) of an experiment config's mesh block {preset, tensor, expert} (configs/sft.py,
  configs/phase_two_synthworld.py): preset "" means one device, and 0 sizes mean make_mesh's defaults.
  per_process (Phase Two): with several processes, a data_parallel_mesh (each process's own copy laid out
  by the preset; "" = its first device) instead of one mesh over all devices."""
  preset = (mesh_cfg.preset if mesh_cfg is not None else "") or ""
  sizes = dict(tensor=mesh_cfg.tensor or None, expert=mesh_cfg.expert or None) if mesh_cfg is not None else {}
  if per_process and jax.process_count() > 1:
    return data_parallel_mesh(preset or "single", **sizes), preset or "single"
  if not preset:
    return None, "fsdp"
  return make_mesh(preset, **sizes), preset


# The MoE block's expert weights inside its shard_map (models/qwen3_vl/moe.py): the union of the presets' rules
# for their logical axes, so the in_specs match the parameters' layout under any preset (no resharding at the
# shard_map boundary); a preset whose rules differ still computes the same, after one resharding.
MOE_WEIGHT_RULES = {"experts": ("expert", "tensor"), "embed": ("fsdp", "expert")}

# Activations inside the attention ops (shard_map specs): rows over every batch-like mesh axis and heads over
# "tensor". Every preset's "batch" rule is a subset of ("data", "fsdp", "expert") whose other axes have size 1
# in its mesh, so this one rule set lays attention out as each preset lays out its activations.
ATTENTION_RULES = {"batch": ("data", "fsdp", "expert"), "heads": "tensor"}


def attention_specs(mesh, rows: int, q_heads: int, kv_heads: int):
  """(rows entry, heads entry) of the PartitionSpecs that layers.kernel_attention gives q [B, L, Hq, D],
  k/v [B, S, Hkv, D] under ``mesh`` (a Mesh or the AbstractMesh of jax.sharding.get_abstract_mesh()).
  Rows split over the batch axes whose product divides B (trailing axes dropped until one does); heads over
  "tensor" only when it divides both Hkv and Hq, so each device keeps whole GQA groups."""
  spec = spec_for(("batch", "heads"), (rows, math.gcd(q_heads, kv_heads)), mesh, ATTENTION_RULES)
  spec = tuple(spec) + (None,) * (2 - len(spec))
  return spec[0], spec[1]


def mesh_of(tree) -> Mesh | None:
  """The mesh of the first array in ``tree`` that is laid out over more than one device, else None."""
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
      return sharding.mesh
  return None


def mesh_context(*trees):
  """jax.set_mesh(the mesh the arrays of ``trees`` live on), or a no-op when they live on one device.

  The model code never names a device; the attention ops read the context mesh
  (jax.sharding.get_abstract_mesh()) to wrap the kernels in shard_map. Every jitted entry point whose
  arguments may be sharded (the forward, prefill, decode, the rollout scan, the Phase One and DPO steps)
  is called inside this, so a model placed on a mesh (from_pretrained(..., mesh=)) runs its kernels sharded."""
  mesh = mesh_of(trees)
  return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


class in_mesh_of_args:  # noqa: N801 (used as a decorator)
  """Decorates a jitted function: each call runs inside mesh_context(its arguments). Other attributes
  (.trace, .lower, .eval_shape, _cache_size) are the jitted function's: use f.eval_shape(...), not
  jax.eval_shape(f, ...), which does not know f's static arguments. For ahead-of-time lowering
  (experiments/aot.py) enter jax.set_mesh yourself."""

  def __init__(self, jitted):
    self.__wrapped__ = jitted
    functools.update_wrapper(self, jitted)

  def __call__(self, *args, **kwargs):
    with mesh_context(args, kwargs):
      return self.__wrapped__(*args, **kwargs)

  def __getattr__(self, name):
    return getattr(self.__wrapped__, name)
