"""Multi-host JAX: process start-up, which batch rows each process feeds, and global batches.

One JAX *process* per host (TPU VM worker, or one per multi-GPU host). Every process runs the same
program; ``jax.devices()`` lists the devices of all processes, ``jax.local_devices()`` this one's. A
mesh from ``sharding.make_mesh`` over ``jax.devices()`` therefore spans the whole slice, and each
process feeds only the batch rows that land on its own devices.

API
  initialize(coordinator_address, num_processes, process_id, local_device_ids=None)
      jax.distributed.initialize, or nothing for a single process (num_processes <= 1). Call it first,
      before anything touches a device.
  define_flags() / initialize_from_flags()
      absl flags --coordinator_address, --num_processes, --process_id (defaults: one process) and the
      call above from their values, for experiments/*.py.
  process_batch(global_batch_rows, process_index=None, process_count=None, mode="blocks")
      the global-batch row indices this process loads. "blocks" (default): process k takes the contiguous
      rows [k*B/n, (k+1)*B/n). That is the order ``jax.make_array_from_process_local_data`` assembles a
      batch-sharded array in (``jax.devices()`` is ordered by process, so process k's devices hold block k
      of the batch axis), hence the global array equals the batch a single process would have built.
      "strided": process k takes rows k::n; the global array then holds the rows permuted (same loss
      for a mean over rows, different row order), useful when a data source is already strided.
  global_array(local, mesh, preset="fsdp", batch_axis=0)
      one process-local block [B/n, ...] -> the global jax.Array [B, ...], batch axis over the preset's
      batch mesh axes (sharding.activation_sharding), via jax.make_array_from_process_local_data.
  global_inputs(local_inputs, mesh, preset="fsdp") / global_batch(tree, mesh, preset="fsdp")
      the same for a text-only ModelInputs (position_ids carry the batch on axis 1) or a tree of [B, ...].
  train_step(graphdef, optimizer)
      a jitted (params, opt_state, rest, ModelInputs, loss_mask) -> (params, opt_state, loss) step (AdamW
      or any optax transform), the one the multi-host test runs; training/sft.py's step works the same way
      on global arrays.

CPU (tests): ``jax_cpu_collectives_implementation`` is "gloo" by default in jax 0.10, so several CPU
processes on one machine form one global mesh (tests/test_multihost.py: 2 processes x 2 forced host
devices via XLA_FLAGS=--xla_force_host_platform_device_count=2).

How to run Phase One on a pod slice / multi-GPU host
----------------------------------------------------
Needs an entry point that calls ``distributed.define_flags()`` at import and ``initialize_from_flags()``
first thing in main (experiments/phase_one.py does not yet: wiring it is its owner's next step).
TPU pod slice (e.g. v5p-32 = 4 hosts x 4 chips): run the SAME command on every worker at once,
  gcloud compute tpus tpu-vm ssh NAME --worker=all --command="cd taskmem-jax && \
      .venv/bin/python -m experiments.phase_one --config=experiments/configs/phase_one_30b_a3b.py \
      --workdir=gs://BUCKET/run1 --num_processes=0"
--num_processes=0 lets jax.distributed.initialize() find the coordinator and process ids itself (Cloud
TPU metadata); the mesh then covers all 16 chips. Check memory first:
``python -m experiments.plan --preset=30B-A3B --target=tpu-v5p-32 --sharding=fsdp_tensor``.
Several GPU hosts (e.g. 2 x 8xH100): on host k (k = 0, 1) run
  python -m experiments.phase_one ... --coordinator_address=HOST0_IP:1234 --num_processes=2 --process_id=k
(one process per host; it drives all 8 local GPUs). One multi-GPU host needs no flags at all: a single
process sees all local GPUs. Under SLURM / Open MPI, --num_processes=0 auto-detects as on TPU.
Rules for the loop: every process must call the same jitted functions in the same
order with the same global shapes; each loads only its ``process_batch`` rows and wraps them with
``global_array`` / ``global_inputs``; only process 0 writes metrics and exports (checkpoints via orbax
are written collectively by all processes, to a path every host can reach, e.g. gs://).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from taskmem_jax import sharding as sharding_lib
from taskmem_jax.models.qwen3_vl.model import ModelInputs
from taskmem_jax.training.loss import masked_cross_entropy

_initialized = False


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None) -> None:
  """Join the multi-process JAX runtime (jax.distributed.initialize), once per process.

  num_processes None or 1: a single process, nothing to do. num_processes 0: jax.distributed.initialize()
  with no arguments (auto-detection on Cloud TPU, SLURM, Open MPI). Otherwise coordinator_address
  ("host:port" of process 0) and process_id are required.
  """
  global _initialized
  if _initialized:
    return
  if num_processes is None or num_processes == 1:
    return
  if num_processes == 0:  # auto-detect (Cloud TPU, SLURM, Open MPI)
    jax.distributed.initialize()
  else:
    if coordinator_address is None or process_id is None:
      raise ValueError(f"num_processes={num_processes} needs coordinator_address (host:port) and process_id")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process_id={process_id} must lie in [0, {num_processes})")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids)
  _initialized = True


def define_flags() -> None:
  """Define --coordinator_address, --num_processes, --process_id (absl), once per program."""
  from absl import flags
  if "num_processes" in flags.FLAGS:
    return
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs only)")
  flags.DEFINE_integer("num_processes", 1, "JAX processes in the job; 1 = single process, 0 = auto-detect "
                       "(Cloud TPU / SLURM)")
  flags.DEFINE_integer("process_id", None, "this process's index in [0, num_processes)")


def initialize_from_flags() -> None:
  """initialize() from the flags of define_flags (after absl parsed them, i.e. inside main)."""
  from absl import flags
  f = flags.FLAGS
  initialize(f.coordinator_address, f.num_processes, f.process_id)


def process_batch(global_batch_rows: int, process_index: int | None = None, process_count: int | None = None,
                  mode: str = "blocks") -> np.ndarray:
  """Indices into the global batch of the rows this process loads (see the module docstring)."""
  k = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  if global_batch_rows % n:
    raise ValueError(f"global batch of {global_batch_rows} rows does not split over {n} processes")
  if mode == "blocks":
    per = global_batch_rows // n
    return np.arange(k * per, (k + 1) * per)
  if mode == "strided":
    return np.arange(k, global_batch_rows, n)
  raise ValueError(f"mode={mode!r}: choose 'blocks' or 'strided'")


def _batch_sharding(mesh: Mesh, preset, ndim: int, batch_axis: int) -> NamedSharding:
  head = sharding_lib.activation_sharding(mesh, preset).spec
  spec = [None] * ndim
  spec[batch_axis] = head[0] if len(head) else None
  return NamedSharding(mesh, PartitionSpec(*spec))


def global_array(local, mesh: Mesh, preset="fsdp", batch_axis: int = 0) -> jax.Array:
  """This process's block of rows -> the global array (batch axis times process_count)."""
  local = np.asarray(local)
  shape = list(local.shape)
  shape[batch_axis] *= jax.process_count()
  return jax.make_array_from_process_local_data(_batch_sharding(mesh, preset, local.ndim, batch_axis), local,
                                                tuple(shape))


def global_batch(tree, mesh: Mesh, preset="fsdp"):
  """global_array over every leaf of a tree of [B_local, ...] arrays."""
  return jax.tree.map(lambda x: global_array(x, mesh, preset), tree)


def global_inputs(inputs: ModelInputs, mesh: Mesh, preset="fsdp") -> ModelInputs:
  """Text-only ModelInputs of this process's rows (prepare_inputs on them) -> global ModelInputs.
  Vision inputs (pixel rows of varying count per process) are not assembled here."""
  if inputs.pixel_values is not None:
    raise ValueError("global_inputs: pixel_values are per-process rows of varying length; encode vision per "
                     "process or pad them to a fixed count first")
  g = lambda x, axis=0: global_array(x, mesh, preset, axis)  # noqa: E731
  return ModelInputs(g(inputs.input_ids), g(inputs.attention_mask), g(inputs.position_ids, 1),
                     g(inputs.rope_deltas), g(inputs.vision_index))


def train_step(graphdef, optimizer: optax.GradientTransformation):
  """A jitted (params, opt_state, rest, inputs, loss_mask) -> (params, opt_state, loss) step. Inputs may be
  global multi-process arrays; the output shardings follow the params' (jit propagates them)."""

  def step(params, opt_state, rest, inputs: ModelInputs, loss_mask):
    def loss_of(p):
      logits = nnx.merge(graphdef, p, rest).forward(inputs)
      return masked_cross_entropy(logits, inputs.input_ids, loss_mask)[0]
    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss.astype(jnp.float32)

  return jax.jit(step)
