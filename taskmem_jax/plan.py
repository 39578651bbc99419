"""Per-device memory plan for Phase One (full AdamW) and Phase Two (steer-only DPO) on a mesh.

Terms (bytes per device; "a" = activation/param bytes, 2 for bf16):

  params       sum over leaves of prod(shard shape) * a, where the shard shape comes from the actual rules:
               jax.eval_shape of the model (params.abstract_model) + sharding.spec_for per leaf (the same
               function param_shardings uses), on a mesh of the preset's shape (make_mesh's arithmetic).
  grads        the trainable leaves' shards in the parameter dtype (Phase One: all; Phase Two: the steer).
  optimizer    AdamW: two moments per trainable element in the parameter's dtype (optax.adamw's default,
               what the trainers use: bf16 moments for bf16 weights; there is no fp32 master copy either),
               sharded like the parameter. Phase Two: the steer tree only ([n_steer_layers, H], replicated).
               (Until the AOT check of issue 20 the plan counted fp32 moments, twice the compiler's bytes.)
  kv_cache     B x S x layers x 2 (k, v) x kv_heads x head_dim x a, split as spec_for gives for the logical
               axes ("batch", None, "kv_heads", None): batch over the preset's batch axes, kv heads over
               "tensor" in fsdp_tensor (only when they divide). For the rollout's sampling (Phase One) and
               the Phase-Two cache build.
  activations  what the backward pass keeps, per device (rows split over the batch axes as
               sharding.activation_sharding does). Under tensor parallelism (mesh axis "tensor" = t > 1)
               the head-sized terms (q, kv, scores) and the MLP-sized terms are divided by t, as the
               Megatron split of heads and MLP leaves them on each device (heads only when they divide;
               the hidden-size terms, residuals and norms, stay whole: no sequence parallelism). Per
               decoder layer, with b = B/batch_split rows, L tokens:
                 attention  b*L*a*(2H + 2*q + 4*kv + q)    (norm in/out, q pre/post rope, k/v pre/post rope,
                                                            attention output), q = heads*head_dim,
                                                            kv = kv_heads*head_dim
                            + b*heads*L*L*8                (fp32 scores and probabilities; with flash
                                                            attention only b*heads*L*4 log-sum-exp)
                 dense MLP  b*L*a*(H + 3*I)                (norm out, gate, up, act*up)
                 MoE        b*L*a*(H + 2*k*H + 3*k*I_moe) + b*L*E*4   (norm out, dispatched tokens and expert
                                                            outputs, gate/up/act per routed copy, fp32 router)
               A MoE layer of more than MOE_CHUNK tokens dispatches in blocks (each recomputed in the
               backward): it keeps b*L*a*2H + the router; one block's copies (MOE_CHUNK tokens x k) are
               transient. Under fsdp_tensor the experts, not their width, are split over "tensor".
               Without remat: layers x per-layer. With per-layer remat (jax.checkpoint around each decoder
               layer): what the compiled update keeps per layer, b*L*a*(2.29 H + 1.82 q) (REMAT_KEPT_*,
               fitted to libtpu's compiles; the JAX-level residual is the layer input, 1 x H), or
               b*L*a*1.6 H when no weight gets a gradient (Phase Two; REMAT_KEPT_FROZEN), plus one layer's
               working set.
               Plus the head: b*L*V*(a + 4) (logits and the fp32 log-softmax), or with the log-prob head in
               blocks of LOGIT_CHUNK positions (rl/step.py, Phase One and Two), one block's b*1024*V*(a + 4).
               Phase Two backpropagates only from the loss down to the first steered layer, so only the
               layers from there up count.
               Against libtpu's compiler (results/aot_2026-12-07, 30B-A3B, v5p-32, 24,576 tokens, 48 layers
               carried from 3 and 6; compiler = arguments + temporaries, the update's outputs aliasing its
               donated state): plan / compiler 0.94 (fsdp_tensor) and 0.97 (expert) for the Phase One
               update, 1.09 and 1.14 for the DPO step; on v5e-16 0.95 and 0.81. At 3 layers the plan is
               0.68-0.80 of the update: the compiler keeps ~2 GiB of fixed buffers (head blocks, dispatch
               copies) the plan leaves out.
  vision       Phase One trains the tower too: with N = vision_tokens x merge^2 patches per row (the
               vision tokens are part of L downstream), per block
                 b*N*a*(8*Dv + 2*Iv)                       (norm outs, qkv, q/k after rotary, attention
                                                            output, fc1, activation; t-split as above)
                 + b*heads_v*N*4 (flash) or b*heads_v*N*N_f*8 (per-frame attention, N_f patches a frame)
               layers x that without remat; with remat depth x b*N*Dv*a + one block. Phase Two runs the
               tower without gradient: nothing kept (one block's working set is transient). Against XLA
               (tests/test_plan.py, tiny tower, fp32, no flash): temp bytes 1.75x the estimate for 128
               patches in 2 frames, 1.88x for 1024 in 4 (the test enforces [1, 3]).
               Checked against XLA on the tiny models (tests/test_plan.py, CPU, fp32, no flash): argument bytes
               = the plan's parameter bytes + the inputs, exactly; the compiler's temp bytes for forward +
               backward are 1.26-1.56x the no-remat estimate for the dense tiny model and 2.0-2.2x for
               tiny-moe (B x L = 2 x 64 and 4 x 256; XLA:CPU also keeps gradient temporaries and ragged_dot
               work buffers the formula leaves out), so read the activation column as a lower bound
               within ~2.5x; the test enforces [1, 3].

Targets: named device sets (TARGETS: chips, memory per chip in GiB, chips per host) or --devices=N.

Several hosts (processes): Phase One and Phase Two run data parallel over processes
(sharding.data_parallel_mesh): each process holds a whole copy of the policy, laid out by the preset over
its own devices, and trains on batch / processes rows; the AdamW moments are split over the processes as
well (ZeRO-1: sharding.zero_rules). The plan then shards parameters, gradients, KV cache and activations
over one process's devices, the moments over all devices; its numbers are per device, as before.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from typing import Mapping

import jax.numpy as jnp
from flax import nnx, traverse_util

from taskmem_jax import sharding as sharding_lib
from taskmem_jax.models.qwen3_vl.config import Qwen3VLConfig
from taskmem_jax.models.qwen3_vl.params import abstract_model
from taskmem_jax.models.qwen3_vl.text import default_steer_layers

GIB = 1024**3
# name -> (JAX devices, memory per device in GiB). In TPU names, v4-N / v5p-N count TensorCores (2 per chip,
# one JAX device per chip: v5p-32 = 16 devices); v5e-N / v6e-N count chips.
# The third number: devices per host (one JAX process each): 4 chips per TPU v4 / v5p host, 4 on multi-host
# v5e / v6e slices (8 on their single-host -8 shapes), 8 GPUs per GPU host.
TARGETS: dict[str, tuple[int, float, int]] = {
    "tpu-v5p-8": (4, 95.0, 4), "tpu-v5p-16": (8, 95.0, 4), "tpu-v5p-32": (16, 95.0, 4),
    "tpu-v5p-64": (32, 95.0, 4), "tpu-v5p-128": (64, 95.0, 4), "tpu-v4-32": (16, 32.0, 4),
    "tpu-v5e-8": (8, 16.0, 8), "tpu-v5e-16": (16, 16.0, 4), "tpu-v6e-8": (8, 32.0, 8), "tpu-v6e-16": (16, 32.0, 4),
    "1xH100": (1, 80.0, 1), "8xH100": (8, 80.0, 8), "16xH100": (16, 80.0, 8), "8xH200": (8, 141.0, 8),
    "8xA100": (8, 80.0, 8),
}


def target(name: str) -> tuple[int, float, int]:
  """(devices, GiB per device, devices per host) of a named target."""
  if name not in TARGETS:
    raise ValueError(f"target={name!r}: unknown; choose one of {sorted(TARGETS)}")
  return TARGETS[name]


def mesh_shape(preset: str, n: int, *, tensor: int | None = None, expert: int | None = None) -> dict[str, int]:
  """The axis sizes sharding.make_mesh gives ``n`` devices, without needing the devices."""
  return dict(zip(sharding_lib.MESH_AXES, sharding_lib.mesh_shape(preset, n, tensor=tensor, expert=expert)))


def _mesh(shape: Mapping[str, int]):
  return types.SimpleNamespace(shape=dict(shape))  # spec_for reads mesh.shape only


def shard_shape(shape, spec, mesh_axes: Mapping[str, int]) -> tuple[int, ...]:
  """One device's block of an array of ``shape`` under PartitionSpec ``spec``."""
  out = list(shape)
  for i, entry in enumerate(tuple(spec)):
    names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    out[i] //= math.prod(mesh_axes[a] for a in names)
  return tuple(out)


@functools.lru_cache(maxsize=8)
def _model_leaves(config: Qwen3VLConfig) -> tuple:
  # Tracing a 30B model's construction takes seconds; a plan (or a sweep of plans) needs it once.
  _, state = abstract_model(config, jnp.bfloat16)
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
  return tuple((tuple(str(k) for k in path), tuple(v.shape)) for path, v in flat.items())


def param_leaves(config: Qwen3VLConfig, *, steer_layers: int = 0):
  """{path tuple: shape} of the model's parameters from jax.eval_shape (plus a steer [n, H] if asked)."""
  leaves = dict(_model_leaves(config))
  if steer_layers:
    leaves[("language_model", "steer")] = (steer_layers, config.text.hidden_size)
  return leaves


def param_bytes_per_device(leaves: Mapping[tuple, tuple], preset, mesh_axes: Mapping[str, int],
                           bytes_per: int = 2) -> int:
  mesh = _mesh(mesh_axes)
  total = 0
  for path, shape in leaves.items():
    spec = sharding_lib.spec_for(sharding_lib.logical_axes(path, shape), shape, mesh, preset)
    total += math.prod(shard_shape(shape, spec, mesh_axes)) * bytes_per
  return total


def _batch_split(rows: int, preset, mesh_axes) -> int:
  spec = sharding_lib.spec_for(("batch",), (rows,), _mesh(mesh_axes), preset)
  return rows // shard_shape((rows,), spec, mesh_axes)[0]


def kv_cache_bytes(config: Qwen3VLConfig, rows: int, length: int, preset, mesh_axes, bytes_per: int = 2) -> int:
  t = config.text
  shape = (rows, length, t.num_key_value_heads, t.head_dim)
  # logical kv_heads is kv_heads*head_dim for weights; split the head axis by the same rule.
  spec = sharding_lib.spec_for(("batch", None, "kv_heads", None), shape, _mesh(mesh_axes), preset)
  per_layer = math.prod(shard_shape(shape, spec, mesh_axes)) * 2 * bytes_per
  return per_layer * t.num_hidden_layers


def _split(count: int, tensor: int) -> int:
  """A head or MLP count per device under tensor parallelism (whole when it does not divide, as spec_for)."""
  return count // tensor if tensor > 1 and count % tensor == 0 else count


# Tokens per MoE dispatch block and positions per log-prob head block (models/qwen3_vl/moe.py MOE_CHUNK,
# rl/step.py LOGIT_CHUNK): the implementation's, restated so the plan imports no training code.
MOE_CHUNK = 8192
LOGIT_CHUNK = 1024
# With per-layer remat, what the TPU compiler keeps per decoder layer, in elements per token per row: the
# layer input is 1 x H, but the compiled update keeps about 2.3 H + 1.8 q (q = the device's query heads x
# head_dim). Fitted to libtpu's Phase One update of 30B-A3B on v5p-32 at 3 and 6 layers, fsdp_tensor (q 1,024)
# and expert (q 4,096), 24,576 tokens (results/aot_2026-12-07); the JAX-level residuals are the layer input
# only (jax.ad_checkpoint.saved_residuals), so the rest is the compiler's scheduling of the recompute.
REMAT_KEPT_HIDDEN = 2.29
REMAT_KEPT_HEADS = 1.82
# Without weight gradients (Phase Two's steer-only DPO) the compiled step keeps 1.0 H per layer above the steer on
# v5p and 2.2 H on v5e (one added layer between the 3- and 6-layer compiles, so each figure is one difference);
# the plan takes 1.6 H, within 25% of both at 48 layers.
REMAT_KEPT_FROZEN = 1.6


def _moe_copies_bytes(t, tokens: int, a: int) -> int:
  """One dispatch of ``tokens`` tokens: the k routed copies, gate/up (fp32 accumulation), act, down (fp32)."""
  k, h, i = t.num_experts_per_tok, t.hidden_size, t.moe_intermediate_size
  return tokens * (k * (h * a + 2 * i * 4 + i * a + h * 4) + h * a)


def layer_activation_bytes(config: Qwen3VLConfig, rows: int, length: int, layer: int, bytes_per: int = 2,
                           flash: bool = True, tensor: int = 1) -> int:
  """What one decoder layer keeps for its backward without remat (formula in the module docstring), for
  ``rows`` rows on one device of a mesh whose "tensor" axis has ``tensor`` devices. A MoE layer of more than
  MOE_CHUNK tokens dispatches in blocks, each recomputed in the backward: it keeps its input and router
  only (one block's copies are transient: layer_working_bytes)."""
  t, a, b, n = config.text, bytes_per, rows, length
  heads, kv_heads = _split(t.num_attention_heads, tensor), _split(t.num_key_value_heads, tensor)
  q, kv = heads * t.head_dim, kv_heads * t.head_dim
  attn = b * n * a * (2 * t.hidden_size + 3 * q + 4 * kv)
  attn += b * heads * n * 4 * (1 if flash else 2 * n)
  if t.is_moe_layer(layer):
    # The experts are split over "tensor" (expert parallel), not their width: each device's dispatch buffers
    # hold every routed copy of its tokens (the copies of other devices' experts fall in no group).
    router = b * n * t.num_experts * 4
    if b * n > MOE_CHUNK:
      mlp = 2 * b * n * a * t.hidden_size + router
    else:
      k, i = t.num_experts_per_tok, t.moe_intermediate_size
      mlp = b * n * a * (t.hidden_size + 2 * k * t.hidden_size + 3 * k * i) + router
  else:
    mlp = b * n * a * (t.hidden_size + 3 * _split(t.intermediate_size, tensor))
  return attn + mlp


def layer_working_bytes(config: Qwen3VLConfig, rows: int, length: int, layer: int, bytes_per: int = 2,
                        flash: bool = True, tensor: int = 1) -> int:
  """One decoder layer's peak while it runs (its kept bytes, plus one MoE dispatch block when blocked)."""
  t, n = config.text, rows * length
  kept = layer_activation_bytes(config, rows, length, layer, bytes_per, flash, tensor)
  return kept + (_moe_copies_bytes(t, MOE_CHUNK, bytes_per) if t.is_moe_layer(layer) and n > MOE_CHUNK else 0)


def activation_bytes(config: Qwen3VLConfig, rows: int, length: int, *, remat: bool, first_layer: int = 0,
                     bytes_per: int = 2, flash: bool = True, tensor: int = 1,
                     logit_chunk: int | None = None, weight_grads: bool = True) -> int:
  """Backward-pass activations of layers first_layer.. plus the head, for ``rows`` rows on one device.

  remat: per layer what the compiled update keeps (REMAT_KEPT_HIDDEN / _HEADS; without weight gradients, as
  in Phase Two's steer-only DPO, REMAT_KEPT_FROZEN x H), plus one layer's working set.
  logit_chunk: the head in blocks of that many positions, each recomputed in the backward (rl/step.py
  token_log_probs: one block's logits and fp32 log-softmax live); None: the whole [rows, length, V]."""
  t = config.text
  layers = range(first_layer, t.num_hidden_layers)
  if remat:
    q = _split(t.num_attention_heads, tensor) * t.head_dim
    per_token = (REMAT_KEPT_HIDDEN * t.hidden_size + REMAT_KEPT_HEADS * q if weight_grads
                 else REMAT_KEPT_FROZEN * t.hidden_size)
    kept = rows * length * bytes_per * per_token
    working = [layer_working_bytes(config, rows, length, i, bytes_per, flash, tensor) for i in layers]
    body = int(len(working) * kept) + max(working, default=0)
  else:
    body = sum(layer_activation_bytes(config, rows, length, i, bytes_per, flash, tensor) for i in layers)
  positions = length if logit_chunk is None else min(length, logit_chunk)
  return body + rows * positions * _split(t.vocab_size, tensor) * (bytes_per + 4)


def vision_activation_bytes(config: Qwen3VLConfig, rows: int, vision_tokens: int, *, remat: bool,
                            bytes_per: int = 2, flash: bool = True, frame_patches: int | None = None,
                            tensor: int = 1) -> int:
  """Backward-pass activations of the vision tower for ``rows`` rows of ``vision_tokens`` merged tokens
  each (formula in the module docstring). frame_patches: patches per frame (the attention segment) for
  the non-flash scores; default all of a row's patches (one frame)."""
  v, a, b = config.vision, bytes_per, rows
  n = vision_tokens * v.spatial_merge_size**2
  heads = _split(v.num_heads, tensor)
  qkv_width = heads * v.head_dim
  # norm1 and norm2 outputs whole; qkv, rotated q and k, attention output per head; fc1 and its activation.
  block = b * n * a * (2 * v.hidden_size + 6 * qkv_width + 2 * _split(v.intermediate_size, tensor))
  block += b * heads * n * 4 * (1 if flash else 2 * (frame_patches or n))
  return (v.depth * b * n * v.hidden_size * a + block) if remat else v.depth * block


@dataclasses.dataclass(frozen=True)
class Row:
  phase: str
  params: int
  grads: int
  optimizer: int
  kv_cache: int
  activations: int

  @property
  def total(self) -> int:
    return self.params + self.grads + self.optimizer + self.kv_cache + self.activations


@dataclasses.dataclass(frozen=True)
class Plan:
  preset_name: str
  sharding: str
  mesh_axes: dict
  rows: list
  memory_gib: float | None
  settings: dict


def plan(config: Qwen3VLConfig, *, devices: int, sharding: str = "fsdp", batch: int = 8, seq: int = 4096,
         kv_batch: int | None = None, kv_seq: int | None = None, remat: bool = True, flash: bool = True,
         steer_layers: int = 1, first_steer_layer: int | None = None, bytes_per: int = 2,
         tensor: int | None = None, expert: int | None = None, memory_gib: float | None = None,
         preset_name: str = "", vision_tokens: int = 0, processes: int = 1) -> Plan:
  """Per-device bytes for Phase One and Phase Two. batch/seq: global training rows and tokens per row;
  kv_batch/kv_seq: the sampler's rows (default batch) and cache length (default seq); vision_tokens: how
  many of a row's seq tokens are merged vision tokens (their tower's activations count in Phase One).
  processes: hosts the devices belong to; the phases run data parallel over them, each process a copy
  over devices / processes devices on batch / processes rows (kv_batch likewise)."""
  if not 0 <= vision_tokens <= seq:
    raise ValueError(f"vision_tokens={vision_tokens} must lie in [0, seq={seq}]")
  if processes < 1 or devices % processes:
    raise ValueError(f"processes={processes} must divide devices={devices}")
  if batch % processes or (kv_batch or batch) % processes:
    raise ValueError(f"batch={batch} and kv_batch={kv_batch or batch} must divide over {processes} processes")
  total_devices, devices = devices, devices // processes
  batch, kv_batch = batch // processes, (kv_batch or batch) // processes
  axes = mesh_shape(sharding, devices, tensor=tensor, expert=expert)
  leaves = param_leaves(config)
  p = param_bytes_per_device(leaves, sharding, axes, bytes_per)
  split = _batch_split(batch, sharding, axes)
  local = batch // split
  kv = kv_cache_bytes(config, kv_batch or batch, kv_seq or seq, sharding, axes, bytes_per)
  n_layers = config.text.num_hidden_layers
  if first_steer_layer is None:
    first_steer_layer = default_steer_layers(n_layers)[0]
  steer = {("language_model", "steer"): (steer_layers, config.text.hidden_size)}
  steer_bytes = param_bytes_per_device(steer, sharding, axes, bytes_per)
  t = axes["tensor"]
  vision = vision_activation_bytes(config, local, vision_tokens, remat=remat, bytes_per=bytes_per, flash=flash,
                                   tensor=t)
  optimizer = 2 * p  # two moments per parameter element in its dtype, laid out as the parameter
  if processes > 1:  # ... and split over the processes too (sharding.zero_rules, rl/population.state_sharding)
    optimizer = 2 * param_bytes_per_device(leaves, sharding_lib.zero_rules(sharding), {**axes, "data": processes},
                                           bytes_per)
  one = Row("Phase One (AdamW, all weights)", p, p, optimizer, kv,
            activation_bytes(config, local, seq, remat=remat, bytes_per=bytes_per, flash=flash, tensor=t,
                             logit_chunk=LOGIT_CHUNK) + vision)
  two = Row("Phase Two (DPO, steer only)", p + steer_bytes, steer_bytes, 2 * steer_bytes, kv,
            activation_bytes(config, local, seq, remat=remat, first_layer=first_steer_layer,
                             bytes_per=bytes_per, flash=flash, tensor=t, logit_chunk=LOGIT_CHUNK,
                             weight_grads=False))
  settings = dict(devices=total_devices, processes=processes, batch=batch * processes, seq=seq,
                  rows_per_device=local, kv_batch=kv_batch * processes,
                  kv_seq=kv_seq or seq, remat=remat, flash=flash, bytes_per=bytes_per,
                  first_steer_layer=first_steer_layer, vision_tokens=vision_tokens, vision_activations=vision)
  return Plan(preset_name, sharding, axes, [one, two], memory_gib, settings)


def format_table(result: Plan) -> str:
  s = result.settings
  mesh = " x ".join(f"{k}={v}" for k, v in result.mesh_axes.items())
  hosts = s.get("processes", 1)
  where = (f"{s['devices']} devices = {hosts} processes x {s['devices'] // hosts}, data parallel (a copy per "
           f"process)" if hosts > 1 else f"{s['devices']} devices")
  lines = [f"{result.preset_name or 'model'} on {where}, sharding={result.sharding} ({mesh} per copy); "
           f"batch={s['batch']} ({s['rows_per_device']}/device) x seq={s['seq']}, KV {s['kv_batch']} x "
           f"{s['kv_seq']}, remat={s['remat']}, flash={s['flash']}, {8 * s['bytes_per']}-bit weights"
           + (f"; {s['vision_tokens']} vision tokens/row (tower activations in Phase One: "
              f"{s['vision_activations'] / GIB:.2f} GiB)" if s.get("vision_tokens") else ""),
           "GiB per device",
           f"| {'phase':32} | {'params':>8} | {'grads':>8} | {'optimizer':>9} | {'KV cache':>8} | "
           f"{'activations':>11} | {'total':>8} |" + (" fits |" if result.memory_gib else ""),
           "|" + "-" * 34 + "|" + "|".join("-" * (w + 2) for w in (8, 8, 9, 8, 11, 8)) + "|"
           + ("------|" if result.memory_gib else "")]
  for r in result.rows:
    g = lambda x: x / GIB  # noqa: E731
    line = (f"| {r.phase:32} | {g(r.params):8.2f} | {g(r.grads):8.3f} | {g(r.optimizer):9.3f} | "
            f"{g(r.kv_cache):8.2f} | {g(r.activations):11.2f} | {g(r.total):8.2f} |")
    if result.memory_gib:
      line += f" {'yes' if g(r.total) <= result.memory_gib else 'NO':4} |"
    lines.append(line)
  if result.memory_gib:
    lines.append(f"device memory: {result.memory_gib:g} GiB (XLA also needs workspace; keep ~10-20% free)")
  return "\n".join(lines)
