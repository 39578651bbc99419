"""Tables of results/aot_2026-12-07: every run of run.sh (experiments.aot --json), the 3- and 6-layer compiles
carried to the model's 48 layers (taskmem_jax.aot.extrapolate), and plan.py beside the compiler.

  python results/aot_2026-12-07/summarize.py results/aot_2026-12-07 > results/aot_2026-12-07/tables.md

Compiler bytes per chip = arguments + temporaries + outputs, except that the Phase One update's outputs are its
donated state (they alias the arguments) and are not counted again. The plan's row at the same shapes: Phase
One (phase_one_update) or Phase Two (dpo_step) = params + grads + optimizer + activations (the KV cache
belongs to sampling, not to these steps).
"""
import dataclasses
import json
import os
import re
import sys

from taskmem_jax import aot
from taskmem_jax import plan as P
from taskmem_jax.models import qwen3_vl

GiB = 1024**3
FULL = qwen3_vl.preset("30B-A3B")

# file stem (without _<layers>l) -> (what it is, chips, preset, rows, tokens per row)
RUNS = {
    "v5p32_fsdp_tensor_ep": ("v5p-32, fsdp_tensor (fsdp 4 x tensor 4), Pallas, remat full, MoE expert-parallel over "
                             "tensor", 16, "fsdp_tensor", 4, 24576),
    "v5p32_expert_ep": ("v5p-32, expert (16 expert-parallel chips), Pallas, remat full, MoE expert-parallel",
                        16, "expert", 16, 24576),
    "v5p32_hosts4_fsdp_tensor_ep": ("v5p-32 as a run lays it out on its 4 hosts (what plan.py --target=tpu-v5p-32 "
                                    "plans): data 4 (hosts) x fsdp 2 x tensor 2, a copy per host, ZeRO-1 moments",
                                    16, "fsdp_tensor", 8, 24576),
    "v5p32_fsdp_tensor_ep_L49152": ("v5p-32, fsdp_tensor, as above, 49,152 tokens per row", 16, "fsdp_tensor", 4,
                                    49152),
    "v5e16_fsdp_tensor_ep": ("v5e-16 (16 GiB chips), fsdp_tensor, Pallas, remat full, MoE expert-parallel",
                             16, "fsdp_tensor", 4, 24576),
    "v5p32_fsdp_tensor_ep_chunked": ("v5p-32, fsdp_tensor, WITHOUT the kernels (chunked XLA attention), remat full, "
                                     "MoE expert-parallel", 16, "fsdp_tensor", 4, 24576),
    "v5p32_fsdp_tensor_pallas": ("BEFORE expert parallelism: v5p-32, fsdp_tensor, Pallas, remat full, every chip "
                                 "gathering all 128 experts per layer", 16, "fsdp_tensor", 4, 24576),
    "v5p32_expert_pallas": ("BEFORE expert parallelism: v5p-32, expert, Pallas, remat full, every chip gathering "
                            "all 128 experts per layer", 16, "expert", 16, 24576),
    "v5p32_fsdp_tensor_chunked": ("BEFORE expert parallelism, without the kernels: chunked XLA attention",
                                  16, "fsdp_tensor", 4, 24576),
    "moe_global_v5p32_fsdp_tensor_b16": ("BEFORE the per-shard MoE: the partitioner's global dispatch, 16 rows",
                                         16, "fsdp_tensor", 16, 24576),
    "moe_per_shard_v5p32_fsdp_tensor_b16": ("MoE per batch shard, 16 rows, whole experts gathered", 16,
                                            "fsdp_tensor", 16, 24576),
    "issue_v5e4_fsdp_xla_noremat_L4096": ("the issue's setting BEFORE: v5e:2x2, fsdp, 4 x 4,096, dense XLA "
                                          "attention, no remat", 4, "fsdp", 4, 4096),
    "issue_v5e4_fsdp_pallas_remat_L4096": ("the issue's setting AFTER: v5e:2x2, fsdp, 4 x 4,096, Pallas under "
                                           "shard_map, remat full, per-shard MoE", 4, "fsdp", 4, 4096),
}


def rows_of(path):
  return [aot.Row(**{**{k: r[k] for k in aot.Row._fields if k in r}, "seconds": 0.0}) for r in map(json.loads, open(path))]


def peak(r):
  return r.arg_bytes + r.temp_bytes + (0 if r.entry == "phase_one_update" else r.out_bytes)


def planned(entry, layers, preset, batch, seq, devices, remat=True, processes=1):
  cfg = FULL.replace(text=dataclasses.replace(FULL.text, num_hidden_layers=layers))
  one, two = P.plan(cfg, devices=devices, sharding=preset, batch=batch, seq=seq, remat=remat, flash=remat,
                    processes=processes).rows
  r = one if entry == "phase_one_update" else two
  return r.params + r.grads + r.optimizer + r.activations


def table(rows, with_plan=None):
  lines = ["| entry | GiB args | GiB out | GiB temp | GiB peak | of HBM | fits | Mosaic calls |" +
           (" plan GiB | plan / compiler |" if with_plan else ""),
           "|---|---:|---:|---:|---:|---:|---|---:|" + ("---:|---:|" if with_plan else "")]
  for r in rows:
    if not r.compiled:
      lines.append(f"| {r.entry} | {r.error} |")
      continue
    line = (f"| {r.entry} | {r.arg_bytes / GiB:.2f} | {r.out_bytes / GiB:.2f} | {r.temp_bytes / GiB:.2f} | "
            f"{peak(r) / GiB:.2f} | {r.hbm_bytes / GiB:.0f} | {'yes' if peak(r) <= r.hbm_bytes else 'NO'} | "
            f"{r.kernel_calls} |")
    if with_plan and r.entry in ("phase_one_update", "dpo_step"):
      p = with_plan(r.entry)
      line += f" {p / GiB:.2f} | {p / peak(r):.2f} |"
    lines.append(line)
  return "\n".join(lines)


def longest_prompt(folder, short="v5p32_fsdp_tensor_ep", long="v5p32_fsdp_tensor_ep_L49152", lengths=(24576, 49152)):
  """The largest prompt per row that fits a chip, for prefill and the Phase One update at 48 layers: each byte
  count carried to 48 layers at both lengths (linear in depth), then linear in the length between them."""
  paths = [os.path.join(folder, f"{stem}_{n}l.jsonl") for stem in (short, long) for n in (3, 6)]
  if not all(os.path.exists(p) for p in paths):
    return
  runs = [{r.entry: r for r in rows_of(p)} for p in paths]
  print("## Largest prompt per row that fits (v5p-32, fsdp_tensor, 4 rows, 48 layers)\n")
  print("Bytes per chip at 48 layers for 24,576 and 49,152 tokens per row (each carried from 3 and 6 layers; "
        "prefill's temporaries, one layer's working set, taken as the larger of the two depths), then linear in the "
        "length; the length where the peak reaches the chip's HBM (95 GiB). Beyond 49,152 this is an "
        "extrapolation, not a compile.\n")
  print("| entry | GiB at 24,576 | GiB at 49,152 | GiB per 1k tokens | longest prompt that fits |")
  print("|---|---:|---:|---:|---:|")
  def at_48(shallow, deep):
    full = aot.extrapolate(shallow, deep, 3, 6, 48)
    if shallow.entry == "prefill":  # its temporaries are one layer's working set: they do not grow with depth
      full = full._replace(temp_bytes=max(shallow.temp_bytes, deep.temp_bytes))
    return peak(full)

  for entry in ("prefill", "phase_one_update"):
    at = [at_48(runs[2 * k][entry], runs[2 * k + 1][entry]) for k in (0, 1)]
    slope = (at[1] - at[0]) / (lengths[1] - lengths[0])
    hbm = runs[0][entry].hbm_bytes
    longest = lengths[0] + (hbm - at[0]) / slope if slope > 0 else float("inf")
    print(f"| {entry} | {at[0] / GiB:.1f} | {at[1] / GiB:.1f} | {slope * 1024 / GiB:.2f} | {int(longest):,} |")
  print()


def main(folder):
  print("# AOT tables (generated by summarize.py)\n")
  for stem, (what, devices, preset, batch, seq) in RUNS.items():
    depths = [n for n in (3, 6) if os.path.exists(os.path.join(folder, f"{stem}_{n}l.jsonl"))]
    remat = "noremat" not in stem
    hosts = 4 if "hosts4" in stem else 1
    for n in depths:
      print(f"## {stem}_{n}l: {what} ({n} of 48 layers, {batch} x {seq:,} tokens)\n")
      plan = lambda e, n=n: planned(e, n, preset, batch, seq, devices, remat, hosts)  # noqa: E731
      print(table(rows_of(os.path.join(folder, f"{stem}_{n}l.jsonl")), plan) + "\n")
    if depths == [3, 6]:
      pairs = zip(*(rows_of(os.path.join(folder, f"{stem}_{n}l.jsonl")) for n in depths))
      full = [aot.extrapolate(a, b, 3, 6, 48) for a, b in pairs]
      print(f"### {stem} carried to 48 layers (linear in depth from 3 and 6; dpo_step's temporaries by the "
            "layers above the steer)\n")
      print(table(full, lambda e: planned(e, 48, preset, batch, seq, devices, remat, hosts)) + "\n")
  longest_prompt(folder)
  known = {f"{stem}_{n}l.jsonl" for stem in RUNS for n in (3, 6)}
  for name in sorted(os.listdir(folder)):
    if name.endswith(".jsonl") and name not in known:
      print(f"## {name[:-6]} (not described in summarize.RUNS)\n\n{table(rows_of(os.path.join(folder, name)))}\n")


if __name__ == "__main__":
  main(sys.argv[1])
