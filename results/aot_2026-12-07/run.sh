#!/usr/bin/env bash
# The AOT measurements of results/aot_2026-12-07/README.md: the TPU compiler (libtpu, no TPU) on a CPU host.
# Each 30B-A3B compile at 3 / 6 layers takes 1-6 minutes on 2 idle cores; the whole script about 90 minutes.
# Resumable: a table already written is not compiled again. The "before" runs need the code before the change
# that their row in summarize.RUNS names (git log results/aot_2026-12-07).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/aot_2026-12-07}
A="python -m experiments.aot --model=30B-A3B"
run() { local out=$1; shift; [ -s "$out" ] || $A "$@" --json="$out"; }
V5P="--topology=v5p:2x2x4 --seq_len=24576"
for L in 3 6; do
  # fsdp_tensor = fsdp 4 x tensor 4: a micro-batch of 4 rows (one per batch shard, as the official micro-batch
  # of 1 per device group); expert = 16 expert-parallel chips that also split the batch, one row per chip
  run $OUT/v5p32_fsdp_tensor_ep_${L}l.jsonl $V5P --num_layers=$L --preset=fsdp_tensor --batch=4 --entries=prefill,phase_one_update,dpo_step
  run $OUT/v5p32_expert_ep_${L}l.jsonl $V5P --num_layers=$L --preset=expert --batch=16 --entries=phase_one_update,dpo_step
  # the prompt length: 49,152 tokens per row (bilinear in depth and length with the 24,576 rows)
  run $OUT/v5p32_fsdp_tensor_ep_L49152_${L}l.jsonl --topology=v5p:2x2x4 --seq_len=49152 --num_layers=$L --preset=fsdp_tensor --batch=4 --entries=prefill,phase_one_update
  # v5e-16 (16 GiB chips)
  run $OUT/v5e16_fsdp_tensor_ep_${L}l.jsonl --topology=v5e:4x4 --seq_len=24576 --num_layers=$L --preset=fsdp_tensor --batch=4 --entries=phase_one_update,dpo_step
done
# without the kernels: the chunked XLA attention
run $OUT/v5p32_fsdp_tensor_ep_chunked_3l.jsonl $V5P --num_layers=3 --preset=fsdp_tensor --batch=4 --entries=phase_one_update,dpo_step --attention=chunked
# the multi-host layout of a v5p-32 run (plan.py --target=tpu-v5p-32): a copy per host, 8 rows
for L in 3 6; do
  run $OUT/v5p32_hosts4_fsdp_tensor_ep_${L}l.jsonl $V5P --processes=4 --num_layers=$L --preset=fsdp_tensor --batch=8 --entries=phase_one_update,dpo_step
done
# the issue's own setting, before (dense XLA attention, no remat) and after
run $OUT/issue_v5e4_fsdp_xla_noremat_L4096_3l.jsonl --topology=v5e:2x2 --seq_len=4096 --num_layers=3 --preset=fsdp --batch=4 --entries=forward,phase_one_update --attention=xla --remat=none
run $OUT/issue_v5e4_fsdp_pallas_remat_L4096_3l.jsonl --topology=v5e:2x2 --seq_len=4096 --num_layers=3 --preset=fsdp --batch=4 --entries=forward,phase_one_update
python results/aot_2026-12-07/summarize.py $OUT > $OUT/tables.md
