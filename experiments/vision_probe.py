r"""Can the tiny SynthWorld policy learn to see? A probe that trains it to name one colour from a clip.

The warm-start policy (experiments/make_sft_data.py) learned to ignore the video; these probes locate
where reading fails. Each example is one SynthWorld clip whose first fact is an object appearing, shown
as a video with no text prompt, and the target is that object's colour word (6 colours: guessing gives
a loss of about 0.9 per target token, counting the end token). The frames are, by --probe:
  fill   every pixel in the object's colour;
  quad   a 32-px block in the colour, in one of the four regions;
  cell   a 10-px block in the colour, in the first cell of a region (--random_cell: any of its 9 cells);
  clip   the real frames of the clip (--render=sprites | schematic).
--upscale repeats pixels (finer effective patches). The mean loss per 100 steps is printed and written to
WORKDIR/probe.json.

  PYTHONPATH=. .venv/bin/python -m experiments.vision_probe --probe=cell --steps=1500 --lr=3e-4 --workdir=/tmp/probe

Measured on 2 CPU cores (experiments/make_sft_data.py docstring has the full list): fill and quad are
learned at lr 1e-3 in ~300 steps; cell at 3e-4 in ~600 steps (not at 1e-3); cell in a random cell is
not learned in 1500 steps at 3e-4 without upscaling; clip is not learned in 4000 steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
from absl import flags

from taskmem_jax import cli

FLAGS = flags.FLAGS
PROBES = ("fill", "quad", "cell", "clip")


def define_flags() -> None:
  """Only when run as a script, so that importing this module defines no flags."""
  flags.DEFINE_enum("probe", "cell", PROBES, "What the frames show (module docstring).")
  flags.DEFINE_enum("render", "sprites", ["sprites", "schematic"], "SynthWorld render for --probe=clip.")
  flags.DEFINE_bool("random_cell", False, "cell: put the block in a random one of the region's 9 cells.")
  flags.DEFINE_integer("upscale", 1, "Pixel repeat factor.")
  flags.DEFINE_integer("streams", 4000, "SynthWorld seeds to draw examples from.")
  flags.DEFINE_integer("steps", 1500, "Training steps (batch 1).")
  flags.DEFINE_float("lr", 3e-4, "Peak learning rate.")
  flags.DEFINE_string("workdir", "/tmp/taskmem_vision_probe", "Checkpoint of the random init and the results.")


def probe_clip(stream, probe: str, seed: int, *, random_cell: bool = False, upscale: int = 1):
  """(the clip as the probe shows it, the target colour), or None when the clip's first fact is not an
  object appearing."""
  from taskmem_jax.envs.synthworld import render_clip
  from taskmem_jax.envs.synthworld.render import COLOURS, FLOOR

  fact = stream.facts_in(0)[0]
  if fact.kind != "appear" or fact.colour is None:
    return None
  clip = render_clip(stream, 0, 10)
  colour = np.array(COLOURS[fact.colour], np.uint8)
  if probe != "clip":
    frames = np.empty_like(clip.frames)
    frames[:] = colour if probe == "fill" else np.array(FLOOR, np.uint8)
    if probe in ("quad", "cell"):
      region = seed % 4
      y, x = 32 * (region // 2), 32 * (region % 2)
      size = 32 if probe == "quad" else 10
      if probe == "cell" and random_cell:
        k = (seed * 7) % 9
        y, x = y + 10 * (k // 3), x + 10 * (k % 3)
      frames[:, y + 2:y + 2 + size, x + 2:x + 2 + size] = colour
    clip = dataclasses.replace(clip, frames=frames)
  if upscale > 1:
    clip = dataclasses.replace(clip, frames=np.repeat(np.repeat(clip.frames, upscale, 1), upscale, 2))
  return clip, fact.colour


def main(argv):
  del argv
  import jax.numpy as jnp

  from taskmem_jax.configs import sft_synthworld
  from experiments.make_sft_data import init_checkpoint
  from taskmem_jax.envs.synthworld import WorldConfig, generate
  from taskmem_jax.io import atomic_write_json
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.processing import Qwen3VLProcessor
  from taskmem_jax.training import train
  from taskmem_jax.training.data import example_from_messages

  checkpoint = init_checkpoint(os.path.join(FLAGS.workdir, "init"))
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  examples = []
  for seed in range(FLAGS.streams):
    made = probe_clip(generate(seed, WorldConfig(num_clips=1, render=FLAGS.render)), FLAGS.probe, seed,
                      random_cell=FLAGS.random_cell, upscale=FLAGS.upscale)
    if made is not None:
      clip, colour = made
      examples.append(example_from_messages(processor, [{"role": "user", "content": [{"type": "video",
                                                                                        "video": clip}]}], colour))
  print(f"{len(examples)} examples, {len(examples[0]['input_ids'])} tokens each")
  cfg = sft_synthworld.get_config()
  cfg.steps, cfg.lr, cfg.warmup_steps, cfg.log_every = FLAGS.steps, FLAGS.lr, 50, 100
  cfg.buckets = (160, 320, 640, 1280)
  cfg.workdir, cfg.export_dir, cfg.save_every = os.path.join(FLAGS.workdir, "train"), "", 10**9
  shutil.rmtree(cfg.workdir, ignore_errors=True)
  model = qwen3_vl.from_pretrained(checkpoint, dtype=jnp.float32)
  losses = [h["loss"] for h in train(cfg, model, examples, processor.pad_token_id)["history"]]
  curve = [round(float(np.mean(losses[i:i + 100])), 3) for i in range(0, len(losses), 100)]
  print("mean loss per 100 steps:", curve)
  atomic_write_json(os.path.join(FLAGS.workdir, "probe.json"), {
      "probe": FLAGS.probe, "render": FLAGS.render, "random_cell": FLAGS.random_cell, "upscale": FLAGS.upscale,
      "steps": FLAGS.steps, "lr": FLAGS.lr, "examples": len(examples), "loss_per_100": curve})
  print(json.dumps({"final": curve[-1] if curve else None}))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
