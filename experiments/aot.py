"""Compile every entry point of a pod run for a TPU topology (or lower it for CUDA) on this host, and print
per-chip memory: what taskmem_jax/aot.py builds, as a table (and JSON lines).

  python -m experiments.aot --topology=v5p:2x2x4 --preset=fsdp_tensor --model=30B-A3B --num_layers=4
  python -m experiments.aot --topology=v5e:2x2 --model=tiny --seq_len=256 --batch=4 --entries=forward,dpo_step
  python -m experiments.aot --platform=cuda --devices=8 --preset=fsdp --model=30B-A3B --num_layers=2
  python -m experiments.aot ... --attention=chunked --remat=full --json=/tmp/aot.jsonl

--num_layers cuts the decoder (compile time grows with depth; memory per chip grows linearly with it:
--extrapolate fits bytes = a + b * layers from the compiles at num_layers and 2 * num_layers and prints the
rows at the model's full depth). The TPU compiler needs libtpu (pip install -e '.[tpu]'); no TPU is used.
With --platform=cuda the entry points are lowered (Triton kernels counted) on this host's devices: force
as many as the mesh needs with XLA_FLAGS=--xla_force_host_platform_device_count=N.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import flags

from taskmem_jax import cli

_TOPOLOGY = flags.DEFINE_string("topology", "v5p:2x2x4", "TPU topology (GEN:AxBxC); v5p:2x2x4 = v5p-32, 16 chips")
_PLATFORM = flags.DEFINE_enum("platform", "tpu", ["tpu", "cuda"], "compile for a TPU topology, or lower for CUDA")
_DEVICES = flags.DEFINE_integer("devices", 0, "cuda: devices in the mesh (default all of this host's)")
_HBM = flags.DEFINE_float("hbm_gib", 80.0, "cuda: memory per GPU for the fits column (not checked: no compile)")
_PRESET = flags.DEFINE_enum("preset", "fsdp", ["single", "fsdp", "fsdp_tensor", "expert"], "sharding preset")
_TENSOR = flags.DEFINE_integer("tensor", None, "tensor-parallel size (fsdp_tensor)")
_EXPERT = flags.DEFINE_integer("expert", None, "expert-parallel size (expert)")
_PROCESSES = flags.DEFINE_integer("processes", 1, "hosts the chips belong to: > 1 compiles the layout of a "
                                  "multi-host run (sharding.data_parallel_mesh: 'data' over the processes, each a "
                                  "copy laid out by --preset over its chips, AdamW moments split over all, ZeRO-1)")
_MODEL = flags.DEFINE_string("model", "30B-A3B", "qwen3_vl preset")
_LAYERS = flags.DEFINE_integer("num_layers", None, "decoder layers (default the model's)")
_EXTRAPOLATE = flags.DEFINE_bool("extrapolate", False, "also compile at 2 x num_layers and extrapolate to full depth")
_SEQ = flags.DEFINE_integer("seq_len", 24576, "tokens per row")
_BATCH = flags.DEFINE_integer("batch", 16, "global rows")
_NEW = flags.DEFINE_integer("max_new_tokens", 256, "decode / rollout_step steps")
_VISION = flags.DEFINE_integer("vision_tokens", 0, "merged vision tokens per row (rollout_step, phase_one_update)")
_ENTRIES = flags.DEFINE_list("entries", "forward,prefill,decode,rollout_step,phase_one_update,dpo_step", "entry points")
_ATTENTION = flags.DEFINE_enum("attention", "pallas", ["pallas", "chunked", "xla"], "attention_impl")
_REMAT = flags.DEFINE_enum("remat", "full", ["none", "full", "dots"], "per-layer remat in the update entries")
_JSON = flags.DEFINE_string("json", None, "also write the rows as JSON lines here")
_DUMP = flags.DEFINE_string("dump_to", None, "TPU: write the compiler's HLO dumps here (xla_dump_to), among them "
                            "*memory-usage-report.txt, the largest buffers of the temporaries")


def main(argv):
  del argv
  # This host only compiles: keep JAX on the CPU backend (libtpu finds no TPU here and would say so at length).
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # several compiles side by side (pytest -n 2)
  import jax
  from taskmem_jax import aot
  from taskmem_jax import sharding as shd
  from taskmem_jax.models import qwen3_vl

  unknown = sorted(set(_ENTRIES.value) - set(aot.ENTRIES))
  if unknown:
    sys.exit(f"--entries: unknown {unknown}; choose from {list(aot.ENTRIES)}")
  if _PLATFORM.value == "tpu":
    devices, hbm = aot.topology_devices(_TOPOLOGY.value)
    where = f"TPU {_TOPOLOGY.value} ({len(devices)} chips)"
  else:
    devices = jax.devices()[:_DEVICES.value or None]
    hbm = int(_HBM.value * 1024**3)
    where = f"CUDA lowering over {len(devices)} devices"
  mesh = aot.process_mesh(_PRESET.value, devices, _PROCESSES.value, tensor=_TENSOR.value, expert=_EXPERT.value)
  config = qwen3_vl.preset(_MODEL.value)
  full_depth = config.text.num_hidden_layers
  settings = aot.Settings(batch=_BATCH.value, seq_len=_SEQ.value, max_new_tokens=_NEW.value,
                          vision_tokens=_VISION.value, attention=_ATTENTION.value, remat=_REMAT.value)

  def at_depth(layers):
    cfg = config if not layers else config.replace(text=dataclasses.replace(config.text, num_hidden_layers=layers))
    rows = []
    for entry in _ENTRIES.value:
      row = aot.compile_entry(entry, cfg, mesh, _PRESET.value, settings, platform=_PLATFORM.value, hbm_bytes=hbm,
                              dump_to=_DUMP.value)
      print(f"  {entry}: {'compiled' if row.compiled else row.error} ({row.seconds:.0f} s)", flush=True)
      rows.append(row)
    return rows

  layers = _LAYERS.value or full_depth
  mesh_text = " x ".join(f"{k}={v}" for k, v in mesh.shape.items())
  title = (f"{_MODEL.value} ({layers} of {full_depth} layers) on {where}, {_PRESET.value} ({mesh_text}); "
           f"B={settings.batch} x L={settings.seq_len}, attention={settings.attention}, remat={settings.remat}, "
           f"{settings.vision_tokens} vision tokens/row, {settings.max_new_tokens} new tokens")
  rows = at_depth(layers)
  print(aot.format_rows(rows, title))
  out = [dict(r.as_json(), layers=layers) for r in rows]
  if _EXTRAPOLATE.value and layers < full_depth and _PLATFORM.value == "tpu":
    rows2 = at_depth(2 * layers)
    full = [aot.extrapolate(a, b, layers, 2 * layers, full_depth) for a, b in zip(rows, rows2)]
    print(aot.format_rows(rows2, title.replace(f"({layers} of", f"({2 * layers} of")))
    print(aot.format_rows(full, title.replace(f"({layers} of", "(extrapolated to all") + " (linear in layers)"))
    out += [dict(r.as_json(), layers=2 * layers) for r in rows2] + [dict(r.as_json(), layers=full_depth,
                                                                         extrapolated=True) for r in full]
  if _JSON.value:
    tmp = _JSON.value + ".tmp"
    with open(tmp, "w") as f:
      for row in out:
        f.write(json.dumps(row) + "\n")
    os.replace(tmp, _JSON.value)


if __name__ == "__main__":
  cli.run(main)
