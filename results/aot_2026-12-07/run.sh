#!/usr/bin/env bash
# The AOT measurements of results/aot_2026-12-07/README.md: the TPU compiler (libtpu, no TPU) on a CPU host.
# Each 30B-A3B compile at 3 / 6 layers takes 2-9 minutes on 2 cores; the whole script about 45 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/aot_2026-12-07}
A="python -m experiments.aot --model=30B-A3B --seq_len=24576"
# Resumable: a table already written is not compiled again.
run() { local out=$1; shift; [ -s "$out" ] || $A "$@" --json="$out"; }
V5P="--topology=v5p:2x2x4"
# after (this change): Pallas kernels per shard, MoE dispatch per shard, remat full; fsdp_tensor = fsdp 4 x tensor 4,
# a micro-batch of 4 rows (one per batch shard, as the official micro-batch of 1 per device group)
for L in 3 6; do
  run $OUT/v5p32_fsdp_tensor_pallas_${L}l.jsonl $V5P --num_layers=$L --preset=fsdp_tensor --batch=4 --entries=prefill,phase_one_update,dpo_step
done
# expert (16 expert-parallel devices; batch over them, one row per chip)
for L in 3 6; do
  run $OUT/v5p32_expert_pallas_${L}l.jsonl $V5P --num_layers=$L --preset=expert --batch=16 --entries=phase_one_update,dpo_step
done
# without the kernels: the chunked XLA attention; and the levers off (dense XLA attention, no remat)
run $OUT/v5p32_fsdp_tensor_chunked_3l.jsonl $V5P --num_layers=3 --preset=fsdp_tensor --batch=4 --entries=phase_one_update --attention=chunked
run $OUT/v5p32_fsdp_tensor_xla_noremat_3l.jsonl $V5P --num_layers=3 --preset=fsdp_tensor --batch=4 --entries=phase_one_update --attention=xla --remat=none
# v5e-16 (16 GiB chips)
run $OUT/v5e16_fsdp_tensor_pallas_3l.jsonl --topology=v5e:4x4 --num_layers=3 --preset=fsdp_tensor --batch=4 --entries=phase_one_update,dpo_step
python results/aot_2026-12-07/summarize.py $OUT > $OUT/tables.md
