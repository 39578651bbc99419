r"""Window sampling and memorising on the shipped SynthWorld policy: the batched paths against the window-by-window
ones they replaced, same model, same windows, one run (issue 22's before / after).

Three figures, each ours (batched) and theirs (one window at a time, memory.sample.sample_window over
sampling.generate, which is how every caller sampled before, and how the official pipeline runs):
  1. Phase One sampling: --streams windows x --group samples (the step's collect; phase_one_synthworld's
     sampling: T 0.7, top-k 20, top-p 0.8, 96 tokens). Ours: memory.memorise.sample_windows, one batch.
  2. Phase Two mining: --contexts windows x 8 samples with a task hint (the demo's adapter: T 0.6, top-p 0.95,
     top-k 20). Ours: the same, one batch.
  3. Memorising --streams streams of --clips clips, greedy, 96 tokens. Ours: memory.memorise (clips encoded once,
     the streams side by side in the window scans); theirs: memory.loop.memorize_stream, stream after stream.
     Greedy memories must agree; the share that does is printed.
Each side runs once to compile, then --repeats timed calls (median). Windows are SynthWorld training windows
with the teacher's history, as Phase One and Phase Two see them.

  PYTHONPATH=. python -m experiments.bench_windows [--streams=4 --group=8 --contexts=48 --clips=10]
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from absl import flags

from taskmem_jax import cli
from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld.source import SynthWorldSource
from taskmem_jax.envs.synthworld.video import render_clip
from taskmem_jax.memory.loop import RolloutConfig, memorize_stream
from taskmem_jax.memory.memorise import ClipStream, memorise, sample_windows
from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.memory.sample import WindowSampling, sample_window

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_POLICY = flags.DEFINE_string("policy", os.path.join(ROOT, "assets", "synthworld_phase_one"), "Policy checkpoint.")
_STREAMS = flags.DEFINE_integer("streams", 4, "Phase One streams (windows per step) and streams memorised.")
_GROUP = flags.DEFINE_integer("group", 8, "Phase One samples per window.")
_CONTEXTS = flags.DEFINE_integer("contexts", 48, "Phase Two mining contexts.")
_CLIPS = flags.DEFINE_integer("clips", 10, "Clips per memorised stream.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per side (median reported).")


def timed(fn, repeats: int) -> tuple[float, float, object]:
  """(first call's seconds, median of `repeats` more, the last output)."""
  tic = time.perf_counter()
  out = fn()
  first = time.perf_counter() - tic
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - tic)
  return first, statistics.median(times), out


def main(argv):
  del argv
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.processing import Qwen3VLProcessor

  model = qwen3_vl.from_pretrained(_POLICY.value, dtype=np.float32)
  processor = Qwen3VLProcessor.from_pretrained(_POLICY.value)
  prompt = read_window_prompt(_POLICY.value)
  world = sw.policy_world_config(_POLICY.value, num_clips=8)
  source = SynthWorldSource(world, seed_base=20_000, teacher_budget=28)
  rng = np.random.default_rng(0)
  rows = []

  def windows(n):
    picks = [(int(v), int(rng.integers(1, 8))) for v in rng.integers(0, 10_000, n)]
    return ([source.video_item(v, c) for v, c in picks], [source.teacher(v).previous(c) for v, c in picks])

  def compare(name, setting, items, previous, sampling, questions=None):
    ours = lambda: sample_windows(model, processor, items, previous, sampling, 0, prompt=prompt, questions=questions)
    theirs = lambda: [sample_window(model, processor, item, shown, sampling, k, prompt=prompt, questions=questions)
                      for k, (item, shown) in enumerate(zip(items, previous))]
    o, t = timed(ours, _REPEATS.value), timed(theirs, _REPEATS.value)
    rows.append((name, setting, o, t, None))

  items, previous = windows(_STREAMS.value)
  compare("Phase One sampling", f"{_STREAMS.value} windows x {_GROUP.value} samples", items, previous,
          WindowSampling(_GROUP.value, 96, 0.7, 20, 0.8))
  items, previous = windows(_CONTEXTS.value)
  compare("Phase Two mining", f"{_CONTEXTS.value} contexts x 8 samples, hint", items, previous,
          WindowSampling(8, 96, 0.6, 20, 0.95), questions=["What is written on the sign?"])

  worlds = [sw.generate(1000 + s, sw.policy_world_config(_POLICY.value, num_clips=_CLIPS.value))
            for s in range(_STREAMS.value)]
  clips = [ClipStream(w.num_clips, lambda k, w=w: {"type": "video", "video": render_clip(w, 10.0 * k, 10.0 * k + 10)})
           for w in worlds]
  cfg = RolloutConfig(max_new_tokens=96, memory_budget=48)
  for streams in sorted({1, _STREAMS.value}):
    ours = lambda: [m.memory for m in memorise(model, processor, clips[:streams], cfg.sampling(), prompt=prompt)]
    theirs = lambda: [memorize_stream(model, processor, None, w.duration, cfg, prompt=prompt, prepare=lambda win, prev, w=w: (
        {"type": "video", "video": render_clip(w, win.start, win.end)}, prev, None))[0] for w in worlds[:streams]]
    o, t = timed(ours, _REPEATS.value), timed(theirs, _REPEATS.value)
    agree = np.mean([a.items() == b.items() for a, b in zip(o[2], t[2])])
    rows.append(("memorising", f"{streams} stream x {_CLIPS.value} clips, greedy", o, t, agree))

  print(f"\nbench_windows: {os.path.basename(_POLICY.value)}, {os.cpu_count()} CPUs\n")
  print("| figure | setting | ours s (first) | window by window s (first) | speed-up | memories agree |")
  print("|---|---|---|---|---|---|")
  for name, setting, o, t, agree in rows:
    print(f"| {name} | {setting} | {o[1]:.2f} ({o[0]:.1f}) | {t[1]:.2f} ({t[0]:.1f}) | {t[1] / o[1]:.2f}x | "
          f"{'' if agree is None else f'{agree:.2f}'} |")


if __name__ == "__main__":
  cli.run(main)
