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
  local_mesh(mesh)
      this process's slice of a sharding.data_parallel_mesh (whose "data" axis runs over processes; slice
      k = process k's devices, laid out by the preset). Parameters (no "data" in their specs) are one full
      copy per process there.
  local_view(tree, mesh) / local_model(model, mesh) / sum_over_processes(local_tree, mesh, shardings)
      global arrays replicated over "data" -> the same buffers as arrays on local_mesh (no copy), for work
      whose shapes differ between processes (sampling, per-group gradients); and per-process local arrays
      -> their sum over processes as global arrays (the data-parallel all-reduce).
  allgather_rows(x, mode) / allgather_ragged(x) / allgather_strings(strings) / any_process(flag)
      host values of every process, in global row order (numpy, via multihost_utils).

CPU (tests): ``jax_cpu_collectives_implementation`` is "gloo" by default in jax 0.10, so several CPU
processes on one machine form one global mesh (tests/test_multihost.py: 2 processes x 2 forced host
devices via XLA_FLAGS=--xla_force_host_platform_device_count=2).

How to run on a pod slice / multi-GPU host (WORKSPACE.md, "Scale-out")
----------------------------------------------------------------------
The entry points experiments/sft.py, phase_one.py and phase_two.py call ``define_flags()`` at import and
``initialize_from_flags()`` first thing in main; every process runs the SAME command.
TPU pod slice (e.g. v5p-32 = 4 hosts x 4 chips):
  gcloud compute tpus tpu-vm ssh NAME --worker=all --command="cd taskmem-jax && \
      .venv/bin/python -m experiments.phase_one --config=taskmem_jax/configs/phase_one_30b_a3b.py \
      --workdir=gs://BUCKET/run1 --config.mesh.fsdp=-1 --num_processes=0"
--num_processes=0 lets jax.distributed.initialize() find the coordinator and process ids itself (Cloud
TPU metadata; also SLURM and Open MPI). Several GPU hosts (e.g. 2 x 8xH100): on host k (k = 0, 1) run
  python -m experiments.phase_one ... --coordinator_address=HOST0_IP:1234 --num_processes=2 --process_id=k
(one process per host; it drives all 8 local GPUs). One multi-GPU host needs no flags at all.

Two ways the processes share the work:
- SFT: one mesh over every device (FSDP across hosts). Every process calls the same jitted step with the
  same global shapes, loads only its ``process_batch`` rows and wraps them with ``global_inputs``.
- Phase One and Phase Two: data parallel over processes (sharding.data_parallel_mesh). Sampling shapes
  differ from window to window, so each process samples and differentiates its own windows on its own
  copy of the policy (``local_view``), and only the gradient sums cross processes
  (``sum_over_processes``); the optimizer moments are split over every device (sharding.zero_rules).
  Each process's copy of the parameters must fit that process's devices: experiments/plan.py with a
  multi-host --target (or --processes) gives the per-device bytes.
Only process 0 writes metrics and exports; orbax checkpoints are written collectively by all processes,
to a path every host can reach (e.g. gs://).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from taskmem_jax import sharding as sharding_lib
from taskmem_jax.models.qwen3_vl.model import ModelInputs

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


def local_mesh(mesh: Mesh) -> Mesh:
  """This process's slice of a sharding.data_parallel_mesh: the same axes, "data" of size 1."""
  k = jax.process_index()
  if mesh.shape["data"] != jax.process_count():
    raise ValueError(f"local_mesh: the mesh's data axis has {mesh.shape['data']} slices, not one per process "
                     f"({jax.process_count()}); build it with sharding.data_parallel_mesh")
  part = mesh.devices[k:k + 1]
  if any(d.process_index != k for d in part.flat):
    raise ValueError(f"local_mesh: data slice {k} holds devices of other processes; build the mesh with "
                     "sharding.data_parallel_mesh")
  return Mesh(part, mesh.axis_names)


def _uses_data(spec: PartitionSpec) -> bool:
  return any(a == "data" or (isinstance(a, tuple) and "data" in a) for a in spec)


def local_view(tree, mesh: Mesh):
  """Global arrays of a data_parallel_mesh, replicated over "data" -> the same arrays on local_mesh(mesh),
  built from this process's shards without a copy (arrays this process already holds whole are
  replicated onto local_mesh). One process: the tree itself."""
  if jax.process_count() == 1:
    return tree
  here = local_mesh(mesh)

  def one(x):
    if not isinstance(x, jax.Array):
      return x
    if x.is_fully_addressable:  # already this process's own (e.g. a steer set from host values): replicated
      return jax.device_put(x, NamedSharding(here, PartitionSpec()))
    spec = getattr(x.sharding, "spec", None)
    if spec is None or _uses_data(spec):
      raise ValueError(f"local_view: an array of shape {x.shape} is sharded as {x.sharding}; it must be a "
                       "NamedSharding that does not split over 'data'")
    return jax.make_array_from_single_device_arrays(x.shape, NamedSharding(here, spec),
                                                    [s.data for s in x.addressable_shards])

  return jax.tree.map(one, tree)


def local_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
  """The model with every array replaced by its local_view (this process's full copy, no copy made)."""
  if jax.process_count() == 1:
    return model
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, local_view(state, mesh))


@functools.lru_cache(maxsize=32)
def _summer(out_shardings: tuple):
  return jax.jit(lambda xs: tuple(jnp.sum(x, axis=0) for x in xs), out_shardings=out_shardings)


def sum_over_processes(local_tree, mesh: Mesh, shardings):
  """Per-process arrays on local_mesh(mesh) (e.g. each process's gradient sum) -> their sum over processes,
  as global arrays with `shardings` (a tree like local_tree, replicated over "data"). One process: as is."""
  if jax.process_count() == 1:
    return local_tree
  leaves, treedef = jax.tree.flatten(local_tree)
  targets = tuple(jax.tree.leaves(shardings))
  n, here = jax.process_count(), local_mesh(mesh)
  stacked = []
  for x, target in zip(leaves, targets):
    # Every process must contribute the same shard shapes: lay each local array out as its target first
    # (a computed gradient and a zero tree can come out sharded differently).
    x = jax.device_put(x, NamedSharding(here, target.spec))
    stacked.append(jax.make_array_from_single_device_arrays(
        (n,) + x.shape, NamedSharding(mesh, PartitionSpec("data", *target.spec)),
        [s.data[None] for s in x.addressable_shards]))
  return jax.tree.unflatten(treedef, _summer(targets)(tuple(stacked)))


def allgather_rows(x, mode: str = "blocks") -> np.ndarray:
  """Each process's rows [b, ...] (its process_batch(n * b, mode=mode) rows) -> all rows [n * b, ...] in
  global row order, on every process."""
  x = np.asarray(x)
  n = jax.process_count()
  if n == 1:
    return x
  from jax.experimental import multihost_utils

  # As raw bytes: through a jax array, float64 / int64 would come back 32-bit (x64 is off).
  raw = np.ascontiguousarray(x).reshape(len(x), -1).view(np.uint8)
  gathered = np.asarray(multihost_utils.process_allgather(raw, tiled=False))  # [n, b, bytes]
  gathered = np.ascontiguousarray(gathered).view(x.dtype).reshape((n,) + x.shape)
  if mode == "blocks":
    return gathered.reshape((-1,) + x.shape[1:])
  if mode == "strided":
    return np.swapaxes(gathered, 0, 1).reshape((-1,) + x.shape[1:])  # row i * n + k from process k
  raise ValueError(f"mode={mode!r}: choose 'blocks' or 'strided'")


def allgather_ragged(x) -> np.ndarray:
  """Each process's 1-D array (any length) -> their concatenation in process order, on every process."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  counts = allgather_rows(np.array([len(x)]))
  padded = np.zeros(max(1, int(counts.max())), x.dtype)
  padded[:len(x)] = x
  rows = allgather_rows(padded[None])
  return np.concatenate([r[:n] for r, n in zip(rows, counts)])


def allgather_strings(strings: Sequence[str | None], mode: str = "blocks") -> list[str | None]:
  """allgather_rows for a list of strings (None kept), the same count on every process."""
  if jax.process_count() == 1:
    return list(strings)
  data = [None if s is None else s.encode("utf-8") for s in strings]
  lengths = allgather_rows(np.array([-1 if d is None else len(d) for d in data], np.int64), mode)
  width = max(1, int(lengths.max()))
  block = np.zeros((len(data), width), np.uint8)
  for i, d in enumerate(data):
    if d:
      block[i, :len(d)] = np.frombuffer(d, np.uint8)
  rows = allgather_rows(block, mode)
  return [None if n < 0 else bytes(r[:n]).decode("utf-8") for r, n in zip(rows, lengths)]


def any_process(flag: bool) -> bool:
  """Whether flag is true on some process (every process gets the same answer)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(allgather_rows(np.array([bool(flag)])).any())
