r"""The performance scoreboard: taskmem_jax against transformers' PyTorch Qwen3-VL, one checkpoint, one run.

Three figures, each a ratio of two timings taken in this run on the same checkpoint and inputs:
  1. prefill: prompt tokens/s of one forward pass over the image + video prompt of bench_forward
     (ours: sampling.generate(1); peer: transformers generate(max_new_tokens=1));
  2. decode: generated tokens/s after the prefill, B*(T-1) / (t(T) - t(1)) on both sides
     (bench_generate's method; greedy, T = --max_new_tokens);
  3. the full memory rollout of B streams of --clips clips (10 s each, --groups frame groups of
     --frame_size pixels), greedy, --rollout_tokens tokens per window, one row per B in --streams (1,4):
       ours: memory.rollout: each clip's vision features computed once (encode_clips), then the jitted
             window scans that assemble every window on device, the B streams side by side: the first 4
             windows in buffers of their own size, then chunks of full windows (timed together);
       peer: the official pipeline's way: window by window, the window's whole video (up to 5 clips)
             re-encoded and a transformers generate call on the window prompt with the previous
             memories, one stream after the other.
     Both sides see the same prompts (memory.rollout.compact_prompt), so greedy tokens should agree; the
     share that does is printed.
Ours is timed after one compiling call. The table (markdown, with date, machine and versions) is
printed and, with --append_to=BENCHMARKS.md, appended to that file; --json=FILE appends its rows as JSON lines
(figure, setting, ours, theirs, ratio, tokens_agree), for scripts that read the ratios.

  PYTHONPATH=. python -m experiments.bench_scoreboard [--append_to=BENCHMARKS.md]
  PYTHONPATH=. python -m experiments.bench_scoreboard --dtype=bfloat16 --batch=8      # on a GPU

The model is bench_forward's "bench-100m" (94M parameters, random weights) with a tiny tokenizer, unless
--checkpoint names a Hugging Face checkpoint directory with its tokenizer.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl import flags

from experiments import bench_forward as bf  # flags: preset, checkpoint, dtype, batch, repeats, seed, frames
from experiments import bench_generate as bg  # flags: max_new_tokens
from taskmem_jax import cli
from taskmem_jax.io import atomic_write_text
from taskmem_jax.memory import rollout as R
from taskmem_jax.memory.prompt import WindowPrompt, read_window_prompt
from taskmem_jax.models import qwen3_vl
from taskmem_jax.models.qwen3_vl import Qwen3VLConfig
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.processing.tokenizer import build_tiny_tokenizer
from taskmem_jax.sampling import SamplingParams

_CLIPS = flags.DEFINE_integer("clips", 10, "Clips per stream in the rollout.")
_STREAMS = flags.DEFINE_list("streams", ["1", "4"], "Rollout rows: streams memorised side by side in each.")
_GROUPS = flags.DEFINE_integer("groups", 5, "Frame groups per 10-s clip (5 = 1 fps with temporal patch 2).")
_FRAME_SIZE = flags.DEFINE_integer("frame_size", 224, "Frame height and width in pixels (multiple of 32).")
_ROLLOUT_TOKENS = flags.DEFINE_integer("rollout_tokens", 32, "Tokens generated per window in the rollout.")
_MEMORY_WIDTH = flags.DEFINE_integer("memory_width", 32, "Tokens kept of each memory (the ring buffer's width).")
_APPEND_TO = flags.DEFINE_string("append_to", "", "Markdown file the table is appended to (e.g. BENCHMARKS.md).")
_JSON = flags.DEFINE_string("json", "", "File the rows are appended to as JSON lines (figure, setting, ours, theirs, "
                            "ratio, tokens_agree).")


def machine() -> str:
  """What the numbers ran on: the jax device (CPU model and cores on a CPU)."""
  device = jax.devices()[0]
  if device.platform == "cpu":
    model = platform.processor() or "cpu"
    try:
      with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
      pass
    return f"CPU, {os.cpu_count()} cores ({model})"
  return f"{device.platform.upper()}: {device.device_kind} x{jax.device_count()}"


def make_checkpoint(tmp: str) -> str:
  """bench_forward's checkpoint with a tokenizer beside it (the rollout's prompts need one)."""
  path = bf.make_checkpoint(tmp)
  if not os.path.isfile(os.path.join(path, "tokenizer.json")):
    build_tiny_tokenizer(Qwen3VLConfig.from_json_file(os.path.join(path, "config.json")), path)
  return path


def rollout_inputs(processor: Qwen3VLProcessor, prompt: WindowPrompt, *, streams: int, clips: int, groups: int,
                   frame_size: int, memory_width: int, seed: int = 0):
  """(window templates by clip count, clip pixels [streams, clips, t*h*w, patch_dim], clip grid): random pixels
  per clip."""
  vision = processor.config.vision
  side = frame_size // vision.patch_size
  grid = (groups, side, side)
  pixels = np.random.default_rng(seed).standard_normal(
      (streams, clips, int(np.prod(grid)), vision.patch_dim)).astype(np.float32)
  return window_template(processor, prompt, grid, memory_width), pixels, grid


def window_template(processor: Qwen3VLProcessor, prompt: WindowPrompt, grid, memory_width: int):
  """The rollout's window templates by clip count (R.build_templates; window prompt `prompt`) for 10-s clips of
  grid (t, h, w), frame groups evenly spaced in time."""
  stamps = [10.0 * (g + 0.5) / grid[0] for g in range(grid[0])]
  return R.build_templates(processor, tuple(grid), stamps, memory_width, prompt=prompt)


def rollout_ours(model, template, pixels, grid, params, fmt, repeats: int) -> dict:
  def call():
    features, deepstack = R.encode_clips(model, pixels, grid)
    return R.rollout(model, template, features, deepstack, params, fmt)  # returns host arrays: synced

  (first,), _, _ = bf.timed(call, 1)
  times, out, foreign = bf.timed(call, repeats)
  return dict(first_s=first, s=statistics.median(times), tokens=out.tokens, foreign=foreign)


def rollout_peer(path: str, config: Qwen3VLConfig, template, pixels, grid, params, fmt, repeats: int,
                 dtype: str = "float32") -> dict:
  """Window by window with transformers generate, re-encoding the window's video each time (template: the
  full window's, or build_templates' tuple, whose last it reads)."""
  template = template[-1] if isinstance(template, tuple) else template
  import transformers  # imported late: only the peer needs it

  torch.set_num_threads(os.cpu_count())
  cls = (transformers.Qwen3VLMoeForConditionalGeneration if config.is_moe
         else transformers.Qwen3VLForConditionalGeneration)
  model = cls.from_pretrained(path, attn_implementation="sdpa", dtype=getattr(torch, dtype)).eval()
  t, h, w = grid
  n_streams, n_clips = pixels.shape[:2]
  width = template.memory_width

  def one_window(ids, clips, row):
    video = torch.from_numpy(np.concatenate([pixels[row, c] for c in clips])).to(model.dtype)
    token_type = np.where(ids == config.video_token_id, 2, 0)
    out = model.generate(input_ids=torch.from_numpy(ids[None].astype(np.int64)),
                         attention_mask=torch.ones((1, len(ids)), dtype=torch.int64),
                         pixel_values_videos=video, video_grid_thw=torch.tensor([[t * len(clips), h, w]]),
                         mm_token_type_ids=torch.from_numpy(token_type[None]), max_new_tokens=params.max_new_tokens,
                         do_sample=False, use_cache=True, eos_token_id=list(params.stop_token_ids),
                         pad_token_id=params.pad_token_id)[0, len(ids):].numpy()
    tokens = np.full(params.max_new_tokens, params.pad_token_id, np.int32)
    tokens[:len(out)] = out
    return tokens

  def call():
    ring_tokens = np.zeros((n_streams, R.MAX_PREVIOUS, width), np.int32)
    ring_lengths = np.zeros((n_streams, R.MAX_PREVIOUS), np.int32)
    steps = []
    for k in range(n_clips):
      tokens = np.stack([one_window(*R.compact_prompt(template, k, ring_tokens[row], ring_lengths[row]), row)
                         for row in range(n_streams)])
      memory, length = R.cut_memory(jnp.asarray(tokens), fmt, width)
      ring_tokens, ring_lengths = (np.asarray(x) for x in R.push(ring_tokens, ring_lengths, memory, length))
      steps.append(tokens)
    return np.stack(steps)

  with torch.inference_mode():
    (first,), _, _ = bf.timed(call, 1)
    times, tokens, foreign = bf.timed(call, repeats)
  return dict(first_s=first, s=statistics.median(times), tokens=tokens, foreign=foreign)


def rows(result: dict) -> list[dict]:
  """The scoreboard's rows: figure (prefill, decode or rollout), setting, ours, theirs (transformers), ratio
  and tokens_agree (the share of greedy tokens that agree; None for prefill, which generates one)."""
  p, d = result["prefill"], result["decode"]
  return [
      {"figure": "prefill", "setting": f"{p['rows']} x {p['prompt_tokens']}-token image+video prompt, tokens/s",
       "ours": p["ours"], "theirs": p["peer"], "ratio": p["ratio"], "tokens_agree": None},
      {"figure": "decode", "setting": f"batch {d['rows']}, {d['new_tokens']} new tokens, greedy, tokens/s",
       "ours": d["ours"], "theirs": d["peer"], "ratio": d["ratio"], "tokens_agree": d["agreement"]},
  ] + [
      {"figure": "rollout", "setting": f"{r['streams']} stream x {r['clips']} clips, {r['window_tokens']}-token "
       f"full window buffer, {r['new_tokens']} tokens/window, memories/s",
       "ours": r["ours"], "theirs": r["peer"], "ratio": r["ratio"], "tokens_agree": r["agreement"]}
      for r in result["rollouts"]
  ]


def table(result: dict) -> str:
  lines = [
      f"### {result['date']}: {result['machine']}",
      "",
      f"`python -m experiments.bench_scoreboard{result['flags']}`; model {result['model']} "
      f"({result['params'] / 1e6:.1f}M parameters), {result['dtype']}; jax {result['versions']['jax']}, torch "
      f"{result['versions']['torch']}, transformers {result['versions']['transformers']}.",
      "",
      "| figure | setting | ours | transformers | ours / transformers | tokens agree |",
      "|---|---|---|---|---|---|",
  ]
  for row in rows(result):
    digits = 0 if row["figure"] == "prefill" else 1 if row["figure"] == "decode" else 2
    agree = "" if row["tokens_agree"] is None else f"{row['tokens_agree']:.3f}"
    lines.append(f"| {row['figure']} | {row['setting']} | {row['ours']:.{digits}f} | {row['theirs']:.{digits}f} | "
                 f"{row['ratio']:.2f}x | {agree} |")
  lines += [
      "",
      f"Ours' first calls (compile included): generate {result['ours_compile_s']:.1f} s, rollout "
      + ", ".join(f"{r['ours_first_s']:.1f} s ({r['streams']} x {r['clips']})" for r in result["rollouts"])
      + f". Other processes' CPU share while timing: {result['foreign_cpu']:.0%}.",
  ]
  return "\n".join(lines) + "\n"


def json_lines(result: dict) -> str:
  """rows() as JSON lines, each with the run's date, machine, model and dtype, for scripts that read ratios."""
  run = {k: result[k] for k in ("date", "machine", "model", "dtype")}
  return "".join(json.dumps({**row, **run}) + "\n" for row in rows(result))


def main(argv):
  del argv
  flags_used = " ".join(a for a in sys.argv[1:] if not a.startswith(("--append_to", "--json")))
  with tempfile.TemporaryDirectory(prefix="bench_scoreboard_") as tmp:
    path = make_checkpoint(tmp)
    config = Qwen3VLConfig.from_json_file(os.path.join(path, "config.json"))
    processor = Qwen3VLProcessor.from_pretrained(path)

    # 1-2. prefill and decode: bench_generate's two sides on bench_forward's image + video prompt.
    batch = bf.make_batch(config)
    ours_gen = bg.run_ours(path, batch)
    model = ours_gen.pop("model")
    peer_gen = bg.run_peer(path, batch, config)
    rows, prompt_tokens = batch["input_ids"].shape
    o, p = bg.rates(ours_gen, rows), bg.rates(peer_gen, rows)
    same_shape = ours_gen["tokens"].shape == peer_gen["tokens"].shape
    prefill = {"rows": rows, "prompt_tokens": prompt_tokens, "ours": rows * prompt_tokens / ours_gen["prefill_s"],
               "peer": rows * prompt_tokens / peer_gen["prefill_s"]}
    decode = {"rows": rows, "new_tokens": bg._MAX_NEW.value, "ours": o["decode_tok_s"], "peer": p["decode_tok_s"],
              "agreement": float((ours_gen["tokens"] == peer_gen["tokens"]).mean()) if same_shape else 0.0}

    # 3. the memory rollout, one row per number of streams.
    params = SamplingParams(_ROLLOUT_TOKENS.value, stop_token_ids=tuple(processor.stop_token_ids),
                            pad_token_id=processor.pad_token_id)
    fmt = R.TokenFormat.from_tokenizer(processor.tokenizer, processor.stop_token_ids)
    rollouts, foreign = [], [ours_gen["foreign"], peer_gen["foreign"]]
    for streams in (int(x) for x in _STREAMS.value):
      templates, pixels, grid = rollout_inputs(processor, read_window_prompt(path), streams=streams,
                                               clips=_CLIPS.value, groups=_GROUPS.value, frame_size=_FRAME_SIZE.value,
                                               memory_width=_MEMORY_WIDTH.value, seed=bf._SEED.value)
      ours_roll = rollout_ours(model, templates, pixels, grid, params, fmt, bf._REPEATS.value)
      peer_roll = rollout_peer(path, config, templates, pixels, grid, params, fmt, bf._REPEATS.value, bf._DTYPE.value)
      foreign += [ours_roll["foreign"], peer_roll["foreign"]]
      ours_tokens = ours_roll["tokens"]  # [clips, streams, T], as the peer's
      memories = streams * _CLIPS.value
      rollouts.append({"streams": streams, "clips": _CLIPS.value, "window_tokens": templates[-1].length,
                       "new_tokens": _ROLLOUT_TOKENS.value, "ours": memories / ours_roll["s"],
                       "peer": memories / peer_roll["s"], "ours_first_s": ours_roll["first_s"],
                       "agreement": float((ours_tokens == peer_roll["tokens"]).mean())
                       if ours_tokens.shape == peer_roll["tokens"].shape else 0.0})
  for figure in (prefill, decode, *rollouts):
    figure["ratio"] = figure["ours"] / figure["peer"]
  result = {"date": datetime.date.today().isoformat(), "machine": machine(), "flags": f" {flags_used}" if flags_used else "",
            "model": os.path.abspath(bf._CHECKPOINT.value) if bf._CHECKPOINT.value else bf._PRESET.value,
            "params": qwen3_vl.count_params(config)["total"], "dtype": bf._DTYPE.value,
            "ours_compile_s": ours_gen["compile_s"], "prefill": prefill, "decode": decode, "rollouts": rollouts,
            "foreign_cpu": max(foreign),
            "versions": {"jax": jax.__version__, "torch": torch.__version__,
                         "transformers": __import__("transformers").__version__}}
  text = table(result)
  print(text)
  if result["foreign_cpu"] > 0.1:
    print("WARNING: other processes used the CPU while timing; the rates above are not trustworthy")
  if bf._DTYPE.value == "float32" and min(decode["agreement"], *(r["agreement"] for r in rollouts)) < 1.0:
    print("WARNING: in float32 the greedy tokens should agree with transformers everywhere")
  if _APPEND_TO.value:
    old = open(_APPEND_TO.value).read() if os.path.isfile(_APPEND_TO.value) else ""
    atomic_write_text(_APPEND_TO.value, old.rstrip("\n") + "\n\n" + text)
    print(f"appended to {_APPEND_TO.value}")
  if _JSON.value:
    old = open(_JSON.value).read() if os.path.isfile(_JSON.value) else ""
    atomic_write_text(_JSON.value, old + json_lines(result))
    print(f"rows appended to {_JSON.value}")


if __name__ == "__main__":
  cli.run(main)
