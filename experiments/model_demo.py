r"""The README's main job: a Qwen3-VL checkpoint run on an image and a short video.

Until SynthWorld exists this builds a tiny random checkpoint (or loads yours with
--config.checkpoint=DIR), writes it in Hugging Face format, loads it back through the same
from_pretrained that real checkpoints use, and runs one forward pass over a prompt holding a
synthetic image and a timestamped synthetic video.

  python -m experiments.model_demo --workdir=/tmp/taskmem_demo
  python -m experiments.model_demo --workdir=/tmp/taskmem_demo --config.preset=tiny-moe
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags
from tqdm import tqdm

from taskmem_jax import cli, configs
from taskmem_jax.io import atomic_write_json
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import normalize, patchify

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Only when run as a script, so that importing this module (tests, other scripts) defines no flags."""
  config_flags.DEFINE_config_file("config", configs.path("model_demo"))
  flags.DEFINE_string("workdir", "/tmp/taskmem_demo", "Where the checkpoint and results go.")


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
  """uint8 [H, W, 3]: a colour gradient with a bright rectangle."""
  y, x = np.mgrid[0:height, 0:width]
  img = np.stack([255 * x / width, 255 * y / height, np.full_like(x, 128.0)], -1)
  r = np.random.default_rng(seed)
  top, left = r.integers(0, height // 2), r.integers(0, width // 2)
  img[top:top + height // 4, left:left + width // 4] = (255, 255, 0)
  return img.astype(np.uint8)


def synthetic_video(height: int, width: int, frames: int) -> np.ndarray:
  """uint8 [T, H, W, 3]: a square moving left to right on a dark background."""
  video = np.zeros((frames, height, width, 3), np.uint8)
  side = height // 4
  for t in range(frames):
    left = int((width - side) * t / max(frames - 1, 1))
    video[t, height // 2 - side // 2: height // 2 + side // 2, left:left + side] = (255, 64, 64)
  return video


def build_prompt(config: qwen3_vl.Qwen3VLConfig, image_grid, video_grid, fps: float) -> np.ndarray:
  """Token ids in Qwen3-VL's chat layout: text, <vs> image pads <ve>, then per video frame group
  `<t seconds>` text, <vs> video pads <ve>. Text tokens are arbitrary ids (a tiny random checkpoint
  has no tokenizer); the vision layout is exactly what transformers 5 produces."""
  merge = config.vision.spatial_merge_size**2
  text = lambda n, start: list(range(start, start + n))
  ids = text(5, 10) + [config.vision_start_token_id]
  ids += [config.image_token_id] * (int(np.prod(image_grid)) // merge) + [config.vision_end_token_id]
  t, h, w = video_grid
  tp = config.vision.temporal_patch_size
  ids += text(3, 20) + [config.vision_start_token_id]
  for group in range(t):
    ids += text(2, 30 + int(group * tp / fps))  # stands in for the "<x.y seconds>" timestamp text
    ids += [config.vision_start_token_id] + [config.video_token_id] * (h * w // merge) + [config.vision_end_token_id]
  ids += [config.vision_end_token_id] + text(6, 40)
  return np.array([ids], np.int64)


def run(cfg, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[cfg.dtype]
  steps = tqdm(total=4, desc="demo", unit="step")
  checkpoint = cfg.checkpoint
  if not checkpoint:
    checkpoint = os.path.join(workdir, "checkpoint")
    model = qwen3_vl.init_random(qwen3_vl.preset(cfg.preset), seed=cfg.seed, dtype=dtype)
    qwen3_vl.save_pretrained(model, checkpoint)
  steps.update(); steps.set_postfix_str("checkpoint written")
  model = qwen3_vl.from_pretrained(checkpoint, dtype=dtype)
  config = model.config
  steps.update(); steps.set_postfix_str("loaded")

  image = synthetic_image(*cfg.image_size, seed=cfg.seed)
  n_frames = max(int(cfg.video_seconds * cfg.video_fps), config.vision.temporal_patch_size)
  video = synthetic_video(*cfg.video_size, frames=n_frames)
  image_pixels, image_grid = patchify(normalize(image[None]), config.vision)
  video_pixels, video_grid = patchify(normalize(video), config.vision)
  input_ids = build_prompt(config, image_grid, video_grid, cfg.video_fps)
  batch = dict(input_ids=input_ids, pixel_values=image_pixels, image_grid_thw=image_grid[None],
               pixel_values_videos=video_pixels, video_grid_thw=video_grid[None])

  start = time.perf_counter()
  logits = jax.block_until_ready(model(**batch))
  first = time.perf_counter() - start
  steps.update(); steps.set_postfix_str("compiled")
  start = time.perf_counter()
  logits = jax.block_until_ready(model(**batch))
  steady = time.perf_counter() - start
  steps.update(); steps.close()

  last = np.asarray(logits[0, -1].astype(jnp.float32))
  top = np.argsort(-last)[: cfg.top_k]
  result = {
      "checkpoint": checkpoint,
      "config": config.model_type,
      "params": qwen3_vl.count_params(config),
      "dtype": cfg.dtype,
      "image_grid_thw": image_grid.tolist(),
      "video_grid_thw": video_grid.tolist(),
      "prompt_tokens": int(input_ids.shape[1]),
      "vision_tokens": int((input_ids == config.image_token_id).sum() + (input_ids == config.video_token_id).sum()),
      "logits_shape": list(logits.shape),
      "logits_finite": bool(np.isfinite(np.asarray(logits, np.float32)).all()),
      "next_token_top_k": [{"id": int(i), "logit": float(last[i])} for i in top],
      "seconds_first_call_with_compile": round(first, 3),
      "seconds_steady_forward": round(steady, 4),
      "backend": jax.default_backend(),
  }
  atomic_write_json(os.path.join(workdir, "demo_results.json"), result)
  return result


def main(argv):
  del argv
  result = run(FLAGS.config, FLAGS.workdir)
  print(json.dumps(result, indent=2))
  print(f"results written to {os.path.join(FLAGS.workdir, 'demo_results.json')}")
  if not result["logits_finite"]:
    raise SystemExit("non-finite logits")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
