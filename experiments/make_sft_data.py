r"""SFT data from SynthWorld teacher memories, the random starting checkpoint, and the shipped policy's run.

For every seed, a stream is generated, the programmatic teacher writes its episodic memory
(teacher_episodic_memory, a token budget per memory), and every window of the streaming schedule
becomes one example: the window prompt (memory.window_messages) with the rendered clip and the
teacher's previous memories of that window, and the target teacher_response(teacher memory of the new
clip). Clips the teacher left out (no new fact fitted) give no example.

  PYTHONPATH=. .venv/bin/python -m experiments.make_sft_data --workdir=WORK [--seeds=0:8 --num_clips=8 ...]

builds WORK/init (random tiny checkpoint + SynthWorld tokenizer), WORK/sft_synthworld.jsonl (optional,
--write_jsonl) and, with --train, trains with taskmem_jax/configs/sft_synthworld.py and exports the
policy to --export_dir.

--teacher_order=time writes the earliest facts that fit instead of the teacher's random subset, so the
target is a function of the video (the default stays the teacher's definition). Examples are kept lazy
(LazyVideoExample: pixels rendered when the training step reads them), so thousands fit in memory.
--render=schematic trains on the 96x96 schematic frames (one 16-px patch per cell) and writes
{"render": ...} to the export's synthworld.json, which the demo and evaluate_policy follow.

The shipped policy is now made by experiments/train_synthworld_policy.py (a vision stage, a reading stage,
then these window examples with the tower frozen), which reads the video. What follows is the history
of the first policy, trained by this script alone, and why it could not read the video.

The first policy (formerly assets/synthworld_policy/) was produced by (seeds 0..31, 8 clips each, teacher budget
40, no upscaling: 256 examples, video grids [10..50, 4, 4], 12888 target tokens; config
taskmem_jax/configs/sft_synthworld.py with --config.steps=500, batch 1, lr 2e-3, seed 0; random init seed 0):

  PYTHONPATH=. .venv/bin/python -m experiments.make_sft_data --workdir=/tmp/sw_sft --seeds=0:32 \
      --num_clips=8 --train --config.steps=500 --export_dir=assets/synthworld_policy --eval_seeds=100:102

Measured on 2 CPU cores: 183 s of training. Loss per target token 5.48 at step 1; mean per 50 steps
3.26, 0.98, 0.81, 0.74, 0.72, 0.69, 0.64, 0.66, 0.59, 0.57; the final logged step-500 loss was 0.918 (a
single example, so noisy). Held-out greedy rollouts (seeds 100, 101; 8 windows each): every response
parses (parse rate 1.0), but memory_quality gives faithfulness 0.0, redundancy 0.5, 37.5% of memories
have no parseable fact, and both seeds give the same texts: the policy has learned the response format
and the fact language, not to read the video. An upscaled run (--upscale=2, grids [.., 8, 8], 600 steps)
had the same loss curve and the same collapse (faithfulness 0.0 on seed 100).

Why, measured (no data bug): the windows' frames hold exactly the target clip's events (changed frames
== fact frames), and at the random init the target loss depends on the video (5.449 right video, 5.447
another seed's, 5.417 blank) with d loss / d vision features 0.13, matching finite differences. Training
then learns to ignore the video: on held-out windows the shipped policy's target loss is 0.6127 with the
right video, another seed's or a blank one (equal to 1e-5), d loss / d features falls to ~3e-6, and the
vision features become a large constant (std 12 against a per-token spread of 1). None of these runs
changed that (time-ordered targets, loss with another seed's video equal to 4 digits): 2400 examples
(seeds 0:300) x 800 steps at lr 2e-3 and at 5e-4; 3000 two-clip windows with budget 12 (first fact) at
lr 1e-3, 2e-4, 5e-5; the vision mergers' output layers zero-initialised (a one-off init change); a
video-only prompt (no instruction, ~200 tokens, 5000 steps at 3e-4). Toy probes (video-only prompt,
target = one colour word, 1646 one-clip streams, chance loss 0.9 per token) locate the limit in the
vision path: a frame filled with the colour is learned at lr 1e-3 in ~300 steps, so is one coloured
32-px region; a solid 10-px square always in a region's first cell is not learned at 1e-3 (1000 steps)
but is at 3e-4 (loss 0.02 in 600 steps); the same square in a random one of the 9 cells is not learned
at 3e-4 in 1500 steps, and with --upscale=2 starts to be after ~1000 (0.61 at 1500), with patch 8 after
~1600 (0.5 at 3000; a 128-wide vision tower: not in 1500); the real frame (first object's colour,
static) is not learned in 4000 steps at 1e-3, 3e-4 or 1e-4, nor upscaled in 3000 at 3e-4, nor on the
schematic render in 1000 at 3e-4 or 1e-3. So lr 2e-3 is too high for small objects, and at lower rates
reading 10-px sprites that straddle 16-px patches takes more steps than a CPU budget gives. Next to try:
lr <= 3e-4 with finer patches (upscale 2 or patch 8) for tens of thousands of steps (a GPU), or a vision
stage first (e.g. per-region object labels as targets).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Mapping

import numpy as np

from taskmem_jax import configs
from taskmem_jax.envs.synthworld import (WorldConfig, build_synthworld_tokenizer, generate, policy_world_config,
                                         render_clip, synthworld_model_config)
from taskmem_jax.envs.synthworld.prompt import PROMPT as SYNTHWORLD_PROMPT
from taskmem_jax.envs.synthworld.teacher import teacher_episodic_memory, teacher_response
from taskmem_jax.envs.synthworld.world import POLICY_FILE
from taskmem_jax.memory import schedule, window_messages
from taskmem_jax.memory.prompt import WindowPrompt, read_window_prompt
from taskmem_jax.processing.video import VideoClip

DEFAULT_BUDGET = 40  # teacher memory budget, tokens of the description
DEFAULT_UPSCALE = 1  # np.repeat factor on frame height and width before the processor


def init_checkpoint(path: str, seed: int = 0, render: str | None = None) -> str:
  """A random tiny Qwen3-VL (synthworld_model_config(render=render)) with the SynthWorld tokenizer, in HF
  format."""
  from taskmem_jax.models import qwen3_vl

  if not os.path.isfile(os.path.join(path, "config.json")):
    os.makedirs(path, exist_ok=True)
    build_synthworld_tokenizer(path)
    qwen3_vl.save_pretrained(qwen3_vl.init_random(synthworld_model_config(render=render), seed=seed), path)
  return path


def upscale(clip: VideoClip, factor: int) -> VideoClip:
  """The clip with every frame pixel repeated factor x factor times (factor 1: unchanged)."""
  if factor == 1:
    return clip
  frames = np.repeat(np.repeat(clip.frames, factor, axis=1), factor, axis=2)
  return dataclasses.replace(clip, frames=frames)


def window_records(seed: int, *, num_clips: int, budget_tokens: int = DEFAULT_BUDGET, upscale_factor: int = 1,
                   teacher_seed: int | None = None, teacher_order: str = "random", render: str = "sprites",
                   world: WorldConfig | None = None, prompt: WindowPrompt = SYNTHWORLD_PROMPT):
  """(stream, teacher memory, [(window, messages, target)]) for one stream. teacher_order: see
  teacher.teacher_memory ("time" makes the target a function of the video); render: WorldConfig.render;
  world: the whole WorldConfig instead (its num_clips replaced by num_clips; render ignored); prompt:
  the window prompt (words and layout)."""
  world = WorldConfig(num_clips=num_clips, render=render) if world is None else dataclasses.replace(world, num_clips=num_clips)
  stream = generate(seed, world)
  rng = np.random.default_rng(seed if teacher_seed is None else teacher_seed)
  memory = teacher_episodic_memory(stream, budget_tokens=budget_tokens, rng=rng, order=teacher_order)
  records = []
  for window in schedule(stream.duration):
    if window.clip not in memory:
      continue
    clip = upscale(render_clip(stream, window.start, window.end), upscale_factor)
    messages = window_messages({"type": "video", "video": clip}, memory.previous(window.clip), None, prompt=prompt)
    records.append((window, messages, teacher_response(memory.get(window.clip))))
  return stream, memory, records


class LazyVideoExample(Mapping):
  """A training example whose pixel_values_videos are rendered again on every access (about 10 ms), so
  that thousands of windows fit in memory: a 5-clip window's pixels are ~5 MB of float32, the rest of
  the example a few KB. Behaves as the example dict for training.data (collate reads it by key)."""

  def __init__(self, example: dict[str, np.ndarray], render):
    self._fields = {k: v for k, v in example.items() if k != "pixel_values_videos"}
    self._render = render

  def __getitem__(self, key):
    return self._render() if key == "pixel_values_videos" else self._fields[key]

  def __iter__(self):
    return iter([*self._fields, "pixel_values_videos"])

  def __len__(self):
    return len(self._fields) + 1


def _pixels_of(processor, prompt, stream, window, previous, upscale_factor):
  clip = upscale(render_clip(stream, window.start, window.end), upscale_factor)
  messages = window_messages({"type": "video", "video": clip}, previous, None, prompt=prompt)
  return processor([messages], thinking=True)["pixel_values_videos"]


def make_examples(processor, seeds, *, prompt: WindowPrompt, num_clips: int, budget_tokens: int = DEFAULT_BUDGET,
                  upscale_factor: int = 1, jsonl_path: str | None = None, teacher_order: str = "random",
                  render: str = "sprites", lazy: bool = False, world: WorldConfig | None = None) -> list:
  """Training examples (training.data format) of every window of every seed's stream, seeds in order, in the
  window prompt `prompt` (the one the policy is trained with: written to its export's window_prompt.json).

  jsonl_path: also write {"seed", "clip", "start", "end", "previous", "target"} per example (the video
  is the seed's stream, re-rendered by render_clip; the records are for inspection, not load_jsonl).
  lazy: LazyVideoExample instead of dicts (the same arrays; pixels rendered when read).
  """
  from taskmem_jax.training.data import example_from_messages

  examples, lines = [], []
  for seed in seeds:
    stream, memory, records = window_records(seed, num_clips=num_clips, budget_tokens=budget_tokens,
                                             upscale_factor=upscale_factor, teacher_order=teacher_order,
                                             render=render, world=world, prompt=prompt)
    for window, messages, target in records:
      example = example_from_messages(processor, messages, target)
      if lazy:
        example = LazyVideoExample(example, functools.partial(_pixels_of, processor, prompt, stream, window,
                                                              memory.previous(window.clip), upscale_factor))
      examples.append(example)
      lines.append({"seed": seed, "clip": window.clip, "start": window.start, "end": window.end,
                    "previous": memory.previous(window.clip), "target": target})
  if jsonl_path:
    with open(jsonl_path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(line) + "\n" for line in lines)
  return examples


def evaluate_policy(checkpoint: str, seed: int, *, num_clips: int, workdir: str, max_new_tokens: int = 128,
                    render: str | None = None) -> dict:
  """Greedy rollout of the policy at `checkpoint` over the held-out stream of `seed` (written to an mp4
  and read back as the pipeline reads videos): per-window parse rate, memory_quality of the memories it
  wrote, and the texts."""
  import jax.numpy as jnp

  from taskmem_jax.envs.synthworld import write_stream
  from taskmem_jax.envs.synthworld.qa import memory_quality
  from taskmem_jax.memory.loop import RolloutConfig, memorize_stream
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.processing import Qwen3VLProcessor

  model = qwen3_vl.from_pretrained(checkpoint, dtype=jnp.float32)
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  overrides = {"render": render} if render else {}
  stream = generate(seed, policy_world_config(checkpoint, num_clips=num_clips, **overrides))
  path = write_stream(stream, os.path.join(workdir, f"heldout_{seed}.mp4"))
  tic = time.perf_counter()
  memory, records = memorize_stream(model, processor, path, stream.duration,
                                    RolloutConfig(max_new_tokens=max_new_tokens), prompt=read_window_prompt(checkpoint))
  parsed = sum(r.parses[0].ok for r in records)
  return {"seed": seed, "windows": len(records), "parsed": parsed, "parse_rate": parsed / max(len(records), 1),
          "quality": memory_quality(stream, memory) if len(memory) else None,
          "seconds": round(time.perf_counter() - tic, 1), "texts": [r.texts[0] for r in records]}


def _seed_range(text: str) -> range:
  if not text:
    return range(0)
  a, _, b = text.partition(":")
  return range(int(a), int(b))


def main(argv):
  del argv
  from absl import flags

  from taskmem_jax.processing import Qwen3VLProcessor

  F = flags.FLAGS
  os.makedirs(F.workdir, exist_ok=True)
  checkpoint = init_checkpoint(os.path.join(F.workdir, "init"))
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  tic = time.perf_counter()
  examples = make_examples(processor, _seed_range(F.seeds), prompt=read_window_prompt(checkpoint),
                           num_clips=F.num_clips, budget_tokens=F.budget,
                           upscale_factor=F.upscale, teacher_order=F.teacher_order, render=F.render, lazy=True,
                           jsonl_path=os.path.join(F.workdir, "sft_synthworld.jsonl") if F.write_jsonl else None)
  lengths = [len(e["input_ids"]) for e in examples]
  print(f"{len(examples)} examples in {time.perf_counter() - tic:.1f} s; lengths {min(lengths)}..{max(lengths)}; "
        f"grids {sorted({tuple(map(tuple, e['video_grid_thw'].tolist())) for e in examples})}; "
        f"{sum(int(e['loss_mask'].sum()) for e in examples)} target tokens")
  if F.train:
    _train(F, checkpoint, processor, examples)
  for seed in _seed_range(F.eval_seeds):
    export = F.export_dir or os.path.join(F.workdir, "export")
    result = evaluate_policy(export, seed, num_clips=F.num_clips, workdir=F.workdir)
    print(json.dumps({k: v for k, v in result.items() if k != "texts"}))
    for text in result["texts"]:
      print("  ", text)


def _train(F, checkpoint, processor, examples):
  import jax.numpy as jnp

  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.training import train

  cfg = F.config
  with cfg.unlocked():
    cfg.workdir = os.path.join(F.workdir, "train")
    cfg.export_dir = F.export_dir or os.path.join(F.workdir, "export")
  model = qwen3_vl.from_pretrained(checkpoint, dtype=jnp.float32)
  tic = time.perf_counter()
  result = train(cfg, model, examples, processor.pad_token_id, tokenizer_dir=checkpoint)
  history = result["history"]
  print(f"trained {cfg.steps} steps in {time.perf_counter() - tic:.0f} s; loss {history[0]['loss']:.4f} -> "
        f"{history[-1]['loss']:.4f}; exported to {cfg.export_dir}")
  with open(os.path.join(F.workdir, "history.json"), "w") as f:
    json.dump(history, f)
  with open(os.path.join(cfg.export_dir, POLICY_FILE), "w") as f:  # the render the demo must show it
    json.dump({"render": F.render}, f)


def define_flags() -> None:
  """Only when run as a script, so that importing this module defines no flags."""
  from absl import flags
  from ml_collections import config_flags

  flags.DEFINE_string("workdir", "/tmp/taskmem_sw_sft", "Initial checkpoint, JSONL, orbax checkpoints.")
  flags.DEFINE_string("seeds", "0:8", "Training stream seeds, start:stop.")
  flags.DEFINE_integer("num_clips", 8, "Clips per stream.")
  flags.DEFINE_integer("budget", DEFAULT_BUDGET, "Teacher memory budget (tokens).")
  flags.DEFINE_enum("teacher_order", "random", ["random", "time"],
                    "Teacher fact order: random (the teacher's definition) or time (the earliest facts that fit: "
                    "a target the video determines, for SFT).")
  flags.DEFINE_enum("render", "sprites", ["sprites", "schematic"],
                    "Frames (WorldConfig.render); the export's synthworld.json records it for the demo.")
  flags.DEFINE_integer("upscale", DEFAULT_UPSCALE, "Pixel repeat factor of the frames.")
  flags.DEFINE_bool("write_jsonl", True, "Write WORK/sft_synthworld.jsonl.")
  flags.DEFINE_bool("train", False, "Train and export.")
  flags.DEFINE_string("eval_seeds", "", "Held-out seeds start:stop to roll the exported policy out on.")
  flags.DEFINE_string("export_dir", "", "Export dir of the trained policy; empty = WORK/export.")
  config_flags.DEFINE_config_file("config", configs.path("sft_synthworld"), "SFT config.")


if __name__ == "__main__":
  from taskmem_jax import cli

  define_flags()
  cli.run(main)
