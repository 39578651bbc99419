"""Phase Two on the real model (Qwen3-VL-30B-A3B): the official steer-DPO and deployment settings.

Used by `python -m experiments.evaluate --benchmark=videomme|egolife|egotempo` (train_adapters) and as the base
of a real-model Phase Two run. Values: taskmem-spec.md §3 and §5 (official repositories), paper-notes.md §3.
"""

import ml_collections

from taskmem_jax.configs import phase_two_synthworld


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = phase_two_synthworld.get_config(variant)
  c.checkpoint = ""          # the Phase-One policy (HF folder), required
  c.steer_layers = (22,)     # the released checkpoint's layer
  c.update_positions = (10, 30, 50)
  c.max_new_tokens = 5120    # official max response length (P2 run.sh)
  # Rollout cache: official T 0.6, top-p 0.95, top-k 20; think cap 6400, description cap 300 tokens.
  c.cache.update(num_samples=8, temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=5120, think_cap=6400,
                 desc_cap=300, max_misses=30)
  # DPO on the steer: beta 0.1, KL 0.1 (k3), AdamW 1e-3, wd 0.01, clip 1.0, 10 steps of 64 rows (32 pairs) in
  # 8 mini-batches; prompts up to 16,385 tokens. Deployed x1.5 (the official post-hoc amplification of the
  # trained layer, applied before the adapter is saved).
  c.dpo.update(steps=10, pairs_per_step=32, num_minibatches=8, beta=0.1, kl_coef=0.1, lr=1e-3, weight_decay=0.01,
               grad_clip=1.0, buckets=(4096, 8192, 12288, 16384, 21504), post_scale=1.5)
  return c
