"""plan.py against the TPU compiler, and the 3-layer compiles carried to 48 layers.

  python results/aot_2026-12-07/compare.py results/aot_2026-12-07/v5p32_fsdp_tensor_pallas.jsonl fsdp_tensor 4

Compiler bytes per chip = arguments + outputs - aliased (donated) + temporaries. The plan's Phase One row at the
same shapes = params + grads + optimizer + activations (no KV cache: the update holds none). To 48 layers:
arguments and the gradients (temporaries) grow with the parameter bytes per chip (plan.param_bytes_per_device of
both depths); with per-layer remat the backward also keeps each layer's input, rows x L x H x 2 bytes per chip.
"""
import dataclasses
import json
import sys

from taskmem_jax import plan as P
from taskmem_jax.models import qwen3_vl

path, preset, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(line) for line in open(path)]
full = qwen3_vl.preset("30B-A3B")
GiB = 1024**3
for row in rows:
  if not row["compiled"]:
    print(row["entry"], "not compiled:", row["error"])
    continue
  layers = row.get("layers", 3)
  cfg = full.replace(text=dataclasses.replace(full.text, num_hidden_layers=layers))
  plan = P.plan(cfg, devices=16, sharding=preset, batch=batch, seq=24576, remat=True, flash=True)
  one, two = plan.rows
  mine = one if row["entry"] == "phase_one_update" else two
  planned = mine.params + mine.grads + mine.optimizer + mine.activations
  compiled = row["arg_bytes"] + row["out_bytes"] + row["temp_bytes"]
  axes = P.mesh_shape(preset, 16)
  p_small = P.param_bytes_per_device(P.param_leaves(cfg), preset, axes)
  p_full = P.param_bytes_per_device(P.param_leaves(full), preset, axes)
  rows_per_chip = plan.settings["rows_per_device"]
  saved = rows_per_chip * 24576 * full.text.hidden_size * 2
  if row["entry"] == "phase_one_update":  # params, 2 moments in, updated out (aliased), grads in temp
    grow = 4 * (p_full - p_small) + (48 - layers) * saved
  else:  # backbone in; the backward runs from the steer's layer up: its inputs kept for the layers above
    grow = (p_full - p_small) + (48 - 22 - max(layers - round(22 * layers / 48), 0)) * saved
  print(f"{row['entry']}: compiler {compiled / GiB:.2f} GiB, plan {planned / GiB:.2f} GiB "
        f"(plan / compiler {planned / compiled:.2f}); at 48 layers ~{(compiled + grow) / GiB:.1f} GiB per chip "
        f"of {row['hbm_bytes'] / GiB:.0f}")
