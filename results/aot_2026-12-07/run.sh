#!/usr/bin/env bash
# The AOT measurements of results/aot_2026-12-07/README.md (CPU host, libtpu; about 40 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/aot_2026-12-07}
A="python -m experiments.aot --model=30B-A3B --seq_len=24576 --num_layers=3"
# v5p-32, fsdp_tensor (fsdp 4 x tensor 4): a micro-batch of one row per batch shard (4 rows)
$A --topology=v5p:2x2x4 --preset=fsdp_tensor --batch=4 --entries=prefill,phase_one_update,dpo_step --extrapolate \
   --json=$OUT/v5p32_fsdp_tensor_pallas.jsonl | tee $OUT/v5p32_fsdp_tensor_pallas.txt
# v5p-32, expert (16 experts-parallel devices, batch over them): one row per chip
$A --topology=v5p:2x2x4 --preset=expert --batch=16 --entries=phase_one_update,dpo_step --extrapolate \
   --json=$OUT/v5p32_expert_pallas.jsonl | tee $OUT/v5p32_expert_pallas.txt
# before the changes: dense XLA attention, no remat (the log-prob head is chunked in both)
$A --topology=v5p:2x2x4 --preset=fsdp_tensor --batch=4 --entries=phase_one_update --attention=xla --remat=none \
   --json=$OUT/v5p32_fsdp_tensor_xla_noremat.jsonl | tee $OUT/v5p32_fsdp_tensor_xla_noremat.txt
# without the kernels: chunked XLA attention
$A --topology=v5p:2x2x4 --preset=fsdp_tensor --batch=4 --entries=phase_one_update --attention=chunked \
   --json=$OUT/v5p32_fsdp_tensor_chunked.jsonl | tee $OUT/v5p32_fsdp_tensor_chunked.txt
# v5e-16 (16 GiB chips)
$A --topology=v5e:4x4 --preset=fsdp_tensor --batch=4 --entries=phase_one_update,dpo_step \
   --json=$OUT/v5e16_fsdp_tensor_pallas.jsonl | tee $OUT/v5e16_fsdp_tensor_pallas.txt
