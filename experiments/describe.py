r"""Describe a video clip with a Qwen3-VL checkpoint: processor -> KV-cache generate -> text.

  python -m experiments.describe --checkpoint=DIR --video=FILE [--start=S --end=E]

DIR is a Hugging Face Qwen3-VL checkpoint (config.json, safetensors, tokenizer files). Without
--checkpoint a tiny random checkpoint with a tiny tokenizer is built in --workdir: its words are
random, but every stage (decord window read, frame sampling, resize, timestamps, chat template,
prefill, decode) is the real one. Without --video a synthetic 12-second clip is written there.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from tqdm import tqdm

from taskmem_jax import cli
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor, build_tiny_tokenizer
from taskmem_jax.processing.video_io import write_video
from taskmem_jax.sampling import generate

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Only when run as a script, so that importing this module (tests, other scripts) defines no flags."""
  flags.DEFINE_string("checkpoint", "", "Hugging Face checkpoint dir; empty = a tiny random one.")
  flags.DEFINE_string("video", "", "Video file; empty = a synthetic clip.")
  flags.DEFINE_float("start", None, "Window start, seconds (default: start of the video).")
  flags.DEFINE_float("end", None, "Window end, seconds (default: end of the video).")
  flags.DEFINE_string("prompt", "Describe what happens in this video clip.", "The user's instruction.")
  flags.DEFINE_bool("thinking", None, "Force the Thinking (True) or Instruct (False) chat template; "
                    "default: the checkpoint's own.")
  flags.DEFINE_integer("max_new_tokens", 256, "Tokens to generate at most.")
  flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
  flags.DEFINE_float("top_p", None, "Nucleus sampling (with temperature > 0).")
  flags.DEFINE_integer("top_k", None, "Top-k sampling (with temperature > 0).")
  flags.DEFINE_integer("thinking_budget", None, "Force </think> after this many tokens.")
  flags.DEFINE_float("fps", 2.0, "Frames sampled per second of video.")
  flags.DEFINE_enum("dtype", "auto", ["auto", "float32", "bfloat16"], "auto: float32 on CPU, else bfloat16.")
  flags.DEFINE_string("workdir", "/tmp/taskmem_describe", "Where a tiny checkpoint / synthetic clip go.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")


def tiny_checkpoint(workdir: str, seed: int = 0) -> str:
  """A random `tiny` Qwen3-VL checkpoint with a matching tiny tokenizer, in HF format."""
  path = os.path.join(workdir, "tiny_checkpoint")
  if not os.path.isfile(os.path.join(path, "config.json")):
    config = qwen3_vl.preset("tiny")
    qwen3_vl.save_pretrained(qwen3_vl.init_random(config, seed=seed), path)
    build_tiny_tokenizer(config, path)
  return path


def synthetic_clip(path: str, seconds: float = 12.0, fps: float = 8.0, size=(96, 128)) -> str:
  """A red square crossing a blue room, written as an mp4."""
  h, w = size
  frames = np.zeros((int(seconds * fps), h, w, 3), np.uint8)
  frames[..., 2] = 80
  for t in range(len(frames)):
    left = int((w - 24) * t / max(len(frames) - 1, 1))
    frames[t, h // 2 - 12: h // 2 + 12, left:left + 24] = (230, 40, 40)
  write_video(path, frames, fps)
  return path


def describe(checkpoint: str, video: str, *, start=None, end=None, prompt: str, thinking=None, max_new_tokens=256,
             temperature=0.0, top_k=None, top_p=None, thinking_budget=None, fps=2.0, dtype="auto", seed=0,
             progress: bool = True, mesh=None, preset="fsdp", model=None) -> dict:
  """Runs the whole pipeline once; returns the text, token count and timings.

  mesh / preset: load the checkpoint sharded (from_pretrained(mesh=, preset=)). model: an already loaded
  (possibly sharded) model of this checkpoint, used instead of loading it again."""
  if dtype == "auto":
    dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  if model is None:
    model = qwen3_vl.from_pretrained(checkpoint, dtype={"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype],
                                     mesh=mesh, preset=preset)
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  item = {"type": "video", "video": video, "fps": fps}
  if start is not None:
    item["video_start"] = start
  if end is not None:
    item["video_end"] = end
  tic = time.perf_counter()
  batch = processor([{"role": "user", "content": [item, {"type": "text", "text": prompt}]}], thinking=thinking)
  preprocess_s = time.perf_counter() - tic
  tokenizer = processor.tokenizer
  stop_ids = processor.stop_token_ids
  bar = tqdm(total=max_new_tokens, desc="decoding", unit="tok", disable=not progress)
  tic = time.perf_counter()
  out = generate(model, batch, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                 seed=seed, stop_token_ids=stop_ids, pad_token_id=processor.pad_token_id,
                 thinking_budget=thinking_budget, think_end_token_id=tokenizer.convert_tokens_to_ids("</think>"),
                 decode_chunk=16, on_tokens=bar.update)
  generate_s = time.perf_counter() - tic
  bar.close()
  length = int(out.lengths[0])
  return {
      "text": tokenizer.decode(out.tokens[0, :length].tolist(), skip_special_tokens=True),
      "new_tokens": length,
      "prompt_tokens": int(batch["attention_mask"].sum()),
      "video_grid_thw": batch["video_grid_thw"].tolist(),
      "preprocess_seconds": round(preprocess_s, 3),
      "generate_seconds_with_compile": round(generate_s, 3),
  }


def main(argv):
  del argv
  os.makedirs(FLAGS.workdir, exist_ok=True)
  checkpoint = FLAGS.checkpoint or tiny_checkpoint(FLAGS.workdir)
  video = FLAGS.video or synthetic_clip(os.path.join(FLAGS.workdir, "synthetic_clip.mp4"))
  if not FLAGS.checkpoint:
    print(f"No --checkpoint: using a tiny random checkpoint at {checkpoint} (its words are random).")
  result = describe(checkpoint, video, start=FLAGS.start, end=FLAGS.end, prompt=FLAGS.prompt,
                    thinking=FLAGS.thinking, max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
                    top_k=FLAGS.top_k, top_p=FLAGS.top_p, thinking_budget=FLAGS.thinking_budget, fps=FLAGS.fps,
                    dtype=FLAGS.dtype, seed=FLAGS.seed)
  start = f"{FLAGS.start:g}s" if FLAGS.start is not None else "start"
  end = f"{FLAGS.end:g}s" if FLAGS.end is not None else "end"
  print(f"\n{video} [{start}, {end}]: {result['prompt_tokens']} prompt tokens, video grid "
        f"{result['video_grid_thw']}, {result['new_tokens']} new tokens in "
        f"{result['generate_seconds_with_compile']} s (with compile)\n")
  print(result["text"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
