"""Ahead-of-time compilation of the entry points a pod run uses, for hardware this host does not have.

No weights and no device memory: parameters and inputs are jax.ShapeDtypeStructs carrying the shardings a
run would give them (sharding.param_shardings under a preset; rows over the batch axes), on the devices of
a TPU topology (jax.experimental.topologies, with libtpu installed) or of this host. Each entry point is
traced, lowered for the target platform and, for TPU, compiled by the real TPU compiler (Mosaic included),
whose memory_analysis() gives the bytes per chip. For CUDA only the lowering runs (a GPU compiler needs
the GPU); it still runs Pallas's Triton lowering of every kernel.

Entry points (what each compiles; B rows of L tokens, all rows sharded as the activations are):
  forward           model.forward: logits [B, L, V] of a text prompt (the transformers-style call).
  prefill           sampler.prefill: a window prompt into a fresh KV cache of L + max_new_tokens slots.
  decode            sampler.decode: max_new_tokens steps of the while loop over that cache.
  rollout_step      one step of the rollout scan (memory/rollout.py): prefill with the window's vision
                    features given (vision_tokens of the L), then decode.
  phase_one_update  one GSPO micro-batch: token log-probs (chunked head), gradients through the whole
                    model (the vision tower's pixels included when vision_tokens > 0) and the AdamW update
                    of taskmem_jax/configs' optimizer (the trainer's make_optimizer).
  dpo_step          Phase Two: B/2 preference pairs, the DPO loss on the steer after layer 22 (scaled to
                    the depth), gradients of the steer only, and its AdamW update; the backbone frozen.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from taskmem_jax import sharding as shd
from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.kernels.flash_attention.api import target_platform
from taskmem_jax.models.qwen3_vl import ModelInputs
from taskmem_jax.models.qwen3_vl.config import Qwen3VLConfig
from taskmem_jax.models.qwen3_vl.params import abstract_model
from taskmem_jax.models.qwen3_vl.positions import vision_metadata
from taskmem_jax.models.qwen3_vl.text import default_steer_layers
from taskmem_jax.phase_two import dpo
from taskmem_jax.rl.losses import k3_kl
from taskmem_jax.rl.step import GroupBatch, LossConfig, group_grad, token_log_probs
from taskmem_jax.sampling import sampler
from taskmem_jax.training.optim import TrainState
from taskmem_jax.training.sft import tree_shardings

ENTRIES = ("forward", "prefill", "decode", "rollout_step", "phase_one_update", "dpo_step")
# HBM per chip (GiB) by TPU generation, as topology names spell it.
TPU_HBM_GIB = {"v4": 32.0, "v5e": 16.0, "v5litepod": 16.0, "v5p": 95.0, "v6e": 32.0}
# Custom-call targets of the two Pallas lowerings: a Mosaic TPU kernel, a Triton kernel.
KERNEL_TARGETS = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}


@dataclasses.dataclass(frozen=True)
class Settings:
  batch: int = 16             # B: global rows (a micro-batch of 1 row per chip on 16 chips, as the official run)
  seq_len: int = 24576        # L: tokens per row (the official max prompt)
  max_new_tokens: int = 256   # decode / rollout_step: steps (and the cache's extra slots)
  vision_tokens: int = 0      # merged vision tokens per row, part of L (rollout_step, phase_one_update)
  attention: str = "pallas"   # attention_impl for text and vision: pallas | chunked | xla
  remat: str = "full"         # per-layer rematerialisation in the update entries: none | full | dots
  steer_layer: int | None = None  # dpo_step; default 22 of 48 scaled to the depth
  dtype: str = "bfloat16"


class Row(NamedTuple):
  entry: str
  compiled: bool
  error: str
  arg_bytes: int
  out_bytes: int
  temp_bytes: int
  code_bytes: int
  kernel_calls: int
  hbm_bytes: int
  fits: bool | None
  seconds: float

  def as_json(self) -> dict:
    return {k: v for k, v in self._asdict().items() if k != "seconds"}


def topology_devices(topology: str) -> tuple[list, int]:
  """Devices of a TPU topology ("v5p:2x2x4", "v5e:2x2") and its HBM per chip in bytes. Needs libtpu (the
  `tpu` extra); no TPU is needed."""
  from jax.experimental import topologies
  generation = topology.split(":")[0]
  if generation not in TPU_HBM_GIB:
    raise ValueError(f"topology={topology!r}: unknown TPU generation {generation!r}; known: {sorted(TPU_HBM_GIB)}")
  try:
    desc = topologies.get_topology_desc(topology_name=topology, platform="tpu")
  except Exception as e:  # noqa: BLE001 (jaxlib raises several kinds; all mean the same to the user)
    raise RuntimeError(f"topology={topology!r}: libtpu could not describe it ({e}). Install the TPU extra "
                       "(pip install -e '.[tpu]') and name a topology as GEN:AxB[xC], e.g. v5p:2x2x4") from e
  return list(desc.devices), int(TPU_HBM_GIB[generation] * 1024**3)


def process_mesh(preset: str, devices: list, processes: int = 1, **sizes) -> Mesh:
  """The mesh a run over ``devices`` uses: sharding.make_mesh for one process; for several, the layout of
  sharding.data_parallel_mesh ("data" over the processes, each process's chips laid out by the preset), with
  the devices grouped by their process_index (a TPU topology's hosts), else in order."""
  if processes == 1:
    return shd.make_mesh(preset, devices, **sizes)
  if processes < 1 or len(devices) % processes:
    raise ValueError(f"processes={processes} must divide the {len(devices)} devices")
  ordered = sorted(devices, key=lambda d: (getattr(d, "process_index", 0), d.id))
  per = len(devices) // processes
  slices = [shd.make_mesh(preset, ordered[k * per:(k + 1) * per], **sizes).devices for k in range(processes)]
  return Mesh(np.concatenate(slices, axis=0), shd.MESH_AXES)


def _struct(shape, dtype, mesh: Mesh, spec=PartitionSpec()):
  return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=NamedSharding(mesh, spec))


def _rows(mesh: Mesh, shape, dtype, axes=("batch",)):
  """An activation-like array: its leading axis over the batch axes where they divide it."""
  spec = shd.spec_for(tuple(axes) + (None,) * (len(shape) - len(axes)), shape, mesh, shd.ATTENTION_RULES)
  return _struct(shape, dtype, mesh, spec)


def _model_config(config: Qwen3VLConfig, s: Settings, *, train: bool) -> Qwen3VLConfig:
  remat = s.remat if train else "none"
  return config.replace(text=dataclasses.replace(config.text, attention_impl=s.attention, remat=remat),
                        vision=dataclasses.replace(config.vision, attention_impl=s.attention, remat=remat))


def _abstract_params(config, mesh: Mesh, preset: str, dtype, steer_layer: int | None = None):
  """(graphdef, params, rest) of abstract arrays with the preset's shardings."""
  graphdef, state = abstract_model(config, dtype)
  if steer_layer is not None:
    model = nnx.eval_shape(lambda: steer_lib.add_steer(nnx.merge(graphdef, state), [steer_layer]))
    graphdef, state = nnx.split(model)
  model = nnx.merge(graphdef, state)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  shard = lambda tree: jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), tree,
                                    shd.param_shardings(tree, mesh, preset))
  rest = jax.tree.map(lambda x: _struct(x.shape, x.dtype, mesh), rest)
  return graphdef, shard(params), rest


def _vision_grid(config: Qwen3VLConfig, tokens: int) -> np.ndarray:
  """A video grid [1, 3] of about ``tokens`` merged tokens: frame pairs of 2 x 25 merged tokens (a 50-s window at
  2 fps is 50 frame pairs), as many as it takes."""
  m = config.vision.spatial_merge_size
  per_pair = 50
  pairs = max(1, tokens // per_pair)
  return np.array([[pairs, 2 * m, 25 * m]], np.int64)


def _text_inputs(mesh: Mesh, b: int, l: int) -> ModelInputs:
  i32 = jnp.int32
  return ModelInputs(_rows(mesh, (b, l), i32), _rows(mesh, (b, l), i32), _rows(mesh, (3, b, l), i32, (None, "batch")),
                     _rows(mesh, (b, 1), i32), _rows(mesh, (b, l), i32))


def _vision_inputs(config: Qwen3VLConfig, mesh: Mesh, b: int, tokens: int):
  """Pixel rows and metadata of one window video per row (abstract, replicated over the mesh)."""
  grid = np.tile(_vision_grid(config, tokens), (b, 1))
  meta = vision_metadata(grid, config.vision)
  pixels = _struct((int(np.prod(grid, axis=1).sum()), config.vision.patch_dim), jnp.float32, mesh)
  return pixels, jax.tree.map(lambda x: _struct(np.shape(x), np.asarray(x).dtype, mesh), meta)


def build(entry: str, config: Qwen3VLConfig, mesh: Mesh, preset: str, s: Settings,
          optimizer: optax.GradientTransformation | None = None) -> tuple[Callable, tuple]:
  """(jitted function, abstract arguments) of one entry point."""
  dtype = jnp.dtype(s.dtype)
  b, l = s.batch, s.seq_len
  train = entry in ("phase_one_update", "dpo_step")
  cfg = _model_config(config, s, train=train)
  hidden = cfg.text.hidden_size
  steer_layer = None
  if entry == "dpo_step":
    n = cfg.text.num_hidden_layers
    steer_layer = s.steer_layer if s.steer_layer is not None else steer_layer_at(n)
  graphdef, params, rest = _abstract_params(cfg, mesh, preset, dtype, steer_layer)
  model = lambda p: nnx.merge(graphdef, p, rest)
  inputs = _text_inputs(mesh, b, l)
  params_sp = sampler.SamplingParams(s.max_new_tokens, temperature=0.7, top_k=20, top_p=0.8, stop_token_ids=(151645,),
                                     pad_token_id=151643)
  cache_len = l + s.max_new_tokens

  if entry == "forward":
    return jax.jit(lambda p, x: model(p).forward(x)), (params, inputs)

  if entry == "prefill":
    return jax.jit(lambda p, x: sampler.prefill(model(p), x, cache_len)), (params, inputs)

  if entry in ("decode", "rollout_step"):
    def cache_struct():
      shape = (b, cache_len, cfg.text.num_key_value_heads, cfg.text.head_dim)
      kv = _rows(mesh, shape, dtype)
      return [sampler.KVCache(kv, kv) for _ in range(cfg.text.num_hidden_layers)]

    if entry == "decode":
      carry = sampler.DecodeState(_struct((), jnp.int32, mesh), _rows(mesh, (b, cfg.text.vocab_size), jnp.float32),
                                  _rows(mesh, (b, s.max_new_tokens), jnp.int32),
                                  _rows(mesh, (b, s.max_new_tokens), jnp.float32), _rows(mesh, (b,), jnp.bool_),
                                  _rows(mesh, (b,), jnp.bool_), _rows(mesh, (b,), jnp.int32), cache_struct(),
                                  jax.eval_shape(lambda: jax.random.key(0)))
      fn = lambda p, c, m, pos: sampler.decode(model(p), c, m, pos, l, params_sp, s.max_new_tokens)
      return jax.jit(fn), (params, carry, _rows(mesh, (b, cache_len), jnp.int32), _rows(mesh, (b,), jnp.int32))

    n_vis = b * s.vision_tokens
    features = _rows(mesh, (max(n_vis, 1), hidden), dtype)
    deepstack = [features] * len(cfg.vision.deepstack_visual_indexes)

    def step(p, x, feats, ds, key):
      m = model(p)
      logits, cache, kv_mask, next_position = sampler.prefill(m, x, cache_len, 1, feats, ds)
      out = sampler.decode(m, sampler.init_decode_state(logits, cache, params_sp, key), kv_mask, next_position, l,
                           params_sp, s.max_new_tokens)
      return out.tokens, out.logprobs

    return jax.jit(step), (params, inputs, features, deepstack, jax.eval_shape(lambda: jax.random.key(0)))

  mask = _rows(mesh, (b, l), jnp.float32)
  if s.vision_tokens:
    pixels, meta = _vision_inputs(cfg, mesh, b, s.vision_tokens)
    inputs = inputs._replace(pixel_values=pixels, vision_meta=meta)
  batch = GroupBatch(inputs, mask)

  if entry == "phase_one_update":
    opt = optimizer or optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-6, weight_decay=0.01))
    # Moments laid out like the parameters they follow (sft.tree_shardings: what the trainers give them), and
    # over several processes split over "data" as well (ZeRO-1, rl/population.state_sharding).
    opt_state = jax.eval_shape(opt.init, params)
    moment_rules = shd.zero_rules(preset) if mesh.shape["data"] > 1 else preset
    opt_state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), opt_state,
                             tree_shardings(opt_state, mesh, moment_rules))
    state = TrainState(_struct((), jnp.int32, mesh), params, opt_state)

    def update(state, rest_, batch, old, adv):
      grads, metrics = group_grad(graphdef, state.params, rest_, LossConfig(), batch, old, adv)
      updates, new_opt = opt.update(grads, state.opt_state, state.params)
      return TrainState(state.step + 1, optax.apply_updates(state.params, updates), new_opt), metrics

    args = (state, rest, batch, _rows(mesh, (b, l), jnp.float32), _rows(mesh, (b,), jnp.float32))
    return jax.jit(update, donate_argnums=0), args

  if entry == "dpo_step":
    if b % 2:
      raise ValueError(f"dpo_step: batch={b} must be even (chosen and rejected rows of B/2 pairs)")
    steer, backbone = params.split(lambda path, _: path[-1] == "steer", ...)
    opt = optimizer or dpo.steer_optimizer(_DpoDefaults())
    opt_state = jax.tree.map(lambda x: _struct(x.shape, x.dtype, mesh), jax.eval_shape(opt.init, steer))

    def step(steer, opt_state, backbone, rest_, batch, ref_tokens):
      def loss(steer):  # rows 2i / 2i+1: pair i's chosen / rejected (train_steer's _pair_loss, B/2 pairs at once)
        logp = token_log_probs(nnx.merge(graphdef, steer, backbone, rest_), batch.inputs, 1.0)
        seq, ref_seq = jnp.sum(logp * batch.response_mask, -1), jnp.sum(ref_tokens * batch.response_mask, -1)
        value, _ = dpo.dpo_loss(seq[0::2], seq[1::2], ref_seq[0::2], ref_seq[1::2], 0.1)
        return value + 0.1 * k3_kl(logp, ref_tokens, batch.response_mask, aggregation="seq-mean-token-mean")
      value, grads = jax.value_and_grad(loss)(steer)
      updates, new_opt = opt.update(grads, opt_state, steer)
      return optax.apply_updates(steer, updates), new_opt, value

    args = (steer, opt_state, backbone, rest, batch, _rows(mesh, (b, l), jnp.float32))
    return jax.jit(step), args
  raise ValueError(f"entry={entry!r}: unknown; choose from {ENTRIES}")


class _DpoDefaults:
  lr, b1, b2, weight_decay, grad_clip = 1e-3, 0.9, 0.999, 0.01, 1.0


def kernel_calls(text: str, platform: str) -> int:
  """Pallas kernel calls in a compiled (or lowered) module's text: custom calls to the platform's kernel target,
  less XLA's own (on TPU, ragged_dot of the MoE lowers to Mosaic calls named ragged-dot-*)."""
  target = KERNEL_TARGETS[platform]
  return sum(1 for line in text.splitlines() if target in line and "ragged-dot" not in line)


def compile_entry(entry: str, config: Qwen3VLConfig, mesh: Mesh, preset: str, s: Settings, *, platform: str = "tpu",
                  hbm_bytes: int = 0, optimizer=None, dump_to: str | None = None) -> Row:
  """Traces, lowers and (TPU) compiles one entry point; errors are reported in the row, not raised."""
  tic = time.perf_counter()
  try:
    with target_platform(platform), jax.set_mesh(mesh):
      fn, args = build(entry, config, mesh, preset, s, optimizer)
      lowered = fn.trace(*args).lower(lowering_platforms=(platform,))
      if platform != "tpu":  # a GPU compiler needs the GPU: count the Triton calls of the lowering
        return Row(entry, False, "lowered only (no compiler for cuda on this host)", 0, 0, 0, 0,
                   kernel_calls(lowered.as_text(), platform), hbm_bytes, None, time.perf_counter() - tic)
      # xla_dump_to: the compiler's HLO and its buffer assignment ("*memory-usage-report.txt": the largest
      # allocations and what shares them), to see what the temporaries are.
      compiled = lowered.compile(compiler_options={"xla_dump_to": dump_to} if dump_to else None)
  except Exception as e:  # noqa: BLE001 (the table reports any failure)
    message = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return Row(entry, False, message, 0, 0, 0, 0, 0, hbm_bytes, False, time.perf_counter() - tic)
  mem = compiled.memory_analysis()
  arg, out, temp = mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes
  alias = getattr(mem, "alias_size_in_bytes", 0)
  total = arg + out - alias + temp
  return Row(entry, True, "", arg, out, temp, mem.generated_code_size_in_bytes,
             kernel_calls(compiled.as_text(), platform), hbm_bytes, total <= hbm_bytes if hbm_bytes else None,
             time.perf_counter() - tic)


def format_rows(rows: list[Row], title: str) -> str:
  gib = lambda x: f"{x / 1024**3:.2f}"  # noqa: E731
  lines = [title, "| entry | compiled | GiB args | GiB out | GiB temp | code MB | kernel calls | fits | s | error |",
           "|---|---|---:|---:|---:|---:|---:|---|---:|---|"]
  for r in rows:
    fits = "-" if r.fits is None else ("yes" if r.fits else "NO")
    lines.append(f"| {r.entry} | {'yes' if r.compiled else 'no'} | {gib(r.arg_bytes)} | {gib(r.out_bytes)} | "
                 f"{gib(r.temp_bytes)} | {r.code_bytes / 1e6:.1f} | {r.kernel_calls} | {fits} | {r.seconds:.0f} | "
                 f"{r.error} |")
  return "\n".join(lines)


def steer_layer_at(layers: int) -> int:
  """dpo_step's steered layer at a depth: the official 22 of 48, scaled."""
  return default_steer_layers(layers)[0]


def extrapolate(a: Row, b: Row, layers_a: int, layers_b: int, layers: int) -> Row:
  """The row at ``layers`` from compiles at two depths, each byte count linear in depth (every decoder layer
  has the same shapes; the vision tower, embeddings and head are the intercept). dpo_step's temporaries grow
  with the layers its backward runs through (from the steered layer up), not with the depth."""
  if not (a.compiled and b.compiled):
    return a._replace(error=a.error or b.error, compiled=False)
  grow = lambda x, y: int(x + (y - x) * (layers - layers_a) / (layers_b - layers_a))  # noqa: E731
  arg, out, temp = grow(a.arg_bytes, b.arg_bytes), grow(a.out_bytes, b.out_bytes), grow(a.temp_bytes, b.temp_bytes)
  if a.entry == "dpo_step":
    above = lambda n: n - steer_layer_at(n)  # noqa: E731
    temp = int(a.temp_bytes + (b.temp_bytes - a.temp_bytes) * (above(layers) - above(layers_a))
               / (above(layers_b) - above(layers_a)))
  donated = a.entry == "phase_one_update"  # its outputs are the donated state: they alias the arguments
  fits = arg + temp + (0 if donated else out) <= a.hbm_bytes if a.hbm_bytes else None
  return Row(a.entry, True, "extrapolated", arg, out, temp, grow(a.code_bytes, b.code_bytes),
             grow(a.kernel_calls, b.kernel_calls), a.hbm_bytes, fits, 0.0)
