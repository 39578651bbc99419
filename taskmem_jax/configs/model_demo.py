"""Config of the README's main job (experiments/model_demo.py)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = "tiny"          # a name in taskmem_jax.models.qwen3_vl.PRESETS; tiny ones run on a laptop CPU
  c.checkpoint = ""          # a Hugging Face checkpoint directory; empty = build a random one of `preset`
  c.seed = 0
  c.dtype = "float32"        # float32 | bfloat16
  c.image_size = (64, 96)    # H, W: multiples of 32 (patch 16 x merge 2)
  c.video_size = (64, 64)
  c.video_seconds = 2.0
  c.video_fps = 2.0          # frames sampled per second, as Qwen3-VL's video processor does by default
  c.top_k = 5                # next-token candidates to print
  return c
