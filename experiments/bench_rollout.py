r"""Streaming rollout speed: the jitted scan against the Python loop, same stream, same model, one run.

Both memorise the same clips with greedy decoding from the same per-clip vision features:
  - scan: memory.rollout.rollout, one jitted lax.scan over all clips (windows built on device);
  - loop: memory.rollout.rollout_reference, a Python loop of sampling.generate calls on compact prompts.
Each is run once to compile, then timed; memories/s = streams * clips / seconds. The script also
checks that both wrote the same tokens.

  python -m experiments.bench_rollout [--clips=10 --streams=2 --max_new_tokens=32]
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time

import jax
import numpy as np
from absl import flags

from experiments import describe
from taskmem_jax import cli
from taskmem_jax.memory import rollout as R
from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.sampling import SamplingParams

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer("clips", 10, "Clips per stream.")
  flags.DEFINE_integer("streams", 2, "Streams memorised side by side (the batch).")
  flags.DEFINE_integer("max_new_tokens", 32, "Response tokens per window.")
  flags.DEFINE_integer("memory_width", 16, "Tokens kept per memory.")
  flags.DEFINE_integer("groups", 5, "Frame groups per clip (10 s at 1 fps -> 5).")
  flags.DEFINE_string("checkpoint", "", "Checkpoint dir with tokenizer; empty = a tiny random one.")


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def main(argv):
  del argv
  checkpoint = FLAGS.checkpoint or describe.tiny_checkpoint(tempfile.mkdtemp())
  model = qwen3_vl.from_pretrained(checkpoint, dtype=np.float32)
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  grid = (FLAGS.groups, 4, 4)
  template = R.build_template(processor, grid, [2.0 * g + 1.0 for g in range(FLAGS.groups)], FLAGS.memory_width,
                              prompt=read_window_prompt(checkpoint))
  pixels = np.random.default_rng(0).standard_normal(
      (FLAGS.streams, FLAGS.clips, int(np.prod(grid)), model.config.vision.patch_dim)).astype(np.float32)
  features, deepstack = R.encode_clips(model, pixels, grid)
  tokenizer = processor.tokenizer
  params = SamplingParams(FLAGS.max_new_tokens, stop_token_ids=tuple(processor.stop_token_ids),
                          pad_token_id=processor.pad_token_id)
  fmt = R.TokenFormat.from_tokenizer(tokenizer)

  run_scan = lambda: R.rollout(model, template, features, deepstack, params, fmt)
  run_loop = lambda: R.rollout_reference(model, template, features, deepstack, params, fmt)
  _, scan_first = timed(run_scan)
  scan, scan_s = timed(run_scan)
  _, loop_first = timed(run_loop)
  loop, loop_s = timed(run_loop)
  memories = FLAGS.streams * FLAGS.clips
  same = bool(np.array_equal(scan.tokens, loop.tokens))
  rows = [
      ("date", datetime.datetime.now().isoformat(timespec="seconds")),
      ("device", f"{jax.default_backend()} ({os.cpu_count()} cores)"),
      ("window buffer tokens", template.length),
      ("streams x clips, tokens per window", f"{FLAGS.streams} x {FLAGS.clips}, {FLAGS.max_new_tokens}"),
      ("scan: first call s, steady s, memories/s", f"{scan_first:.2f}, {scan_s:.2f}, {memories / scan_s:.1f}"),
      ("loop: first call s, steady s, memories/s", f"{loop_first:.2f}, {loop_s:.2f}, {memories / loop_s:.1f}"),
      ("speedup (loop s / scan s)", f"{loop_s / scan_s:.2f}x"),
      ("same tokens", same),
  ]
  for name, value in rows:
    print(f"{name:<44}{value}")
  if not same:
    print("WARNING: the scan and the loop wrote different tokens")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
