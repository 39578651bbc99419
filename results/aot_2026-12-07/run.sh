#!/usr/bin/env bash
# The AOT measurement of results/aot_2026-12-07/README.md (CPU host with libtpu; ~3 min on 2 idle cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/aot_2026-12-07}
python -m experiments.aot --topology=v5p:2x2x4 --preset=fsdp_tensor --model=30B-A3B --num_layers=3 \
  --entries=forward,phase_one_update --json=$OUT/v5p32_fsdp_tensor_pallas_b16_3layers.jsonl
python results/aot_2026-12-07/compare.py $OUT/v5p32_fsdp_tensor_pallas_b16_3layers.jsonl fsdp_tensor 16
