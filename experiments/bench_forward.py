r"""Forward-pass benchmark: taskmem_jax against transformers' PyTorch Qwen3-VL, one checkpoint, one run.

Measures, on the same Hugging Face checkpoint and the same inputs (one image plus one video of
several frame groups, in the prompt layout of experiments/model_demo.py):
  - ours: taskmem_jax ``from_pretrained(dir)`` then ``model(**batch)`` (jitted): the first call
    (trace + compile + one run) in seconds, then the median of --repeats steady calls in ms;
  - peer: transformers ``Qwen3VL(Moe)ForConditionalGeneration.from_pretrained(dir)`` with sdpa
    attention under ``torch.inference_mode()``, torch threads = os.cpu_count(): median of --repeats
    calls after one warm-up, in ms;
  - correctness: max |ours - peer| / max |peer| over all logits.
The checkpoint is random (init_random + save_pretrained into a temp dir) unless --checkpoint DIR.
"bench-100m" is a ~94M-parameter dense config defined below; any name in PRESETS also works.

  PYTHONPATH=. python experiments/bench_forward.py
  PYTHONPATH=. python experiments/bench_forward.py --dtype=bfloat16 --json_out=/tmp/bench.json
  PYTHONPATH=. python experiments/bench_forward.py --preset=tiny-moe --frames=4
"""

from __future__ import annotations

import datetime
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl import flags

from experiments.model_demo import build_prompt, synthetic_image, synthetic_video
from taskmem_jax import cli
from taskmem_jax.io import atomic_write_json
from taskmem_jax.models import qwen3_vl
from taskmem_jax.models.qwen3_vl import Qwen3VLConfig, TextConfig, VisionConfig
from taskmem_jax.processing import normalize, patchify

_PRESET = flags.DEFINE_string("preset", "bench-100m", "'bench-100m' or a name in qwen3_vl.PRESETS.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "", "A Hugging Face checkpoint dir; empty = random --preset.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of both models.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per model (median reported).")
_BATCH = flags.DEFINE_integer("batch", 1, "Copies of the prompt (and its image and video) in the batch.")
_FRAMES = flags.DEFINE_integer("frames", 8, "Video frames (groups of temporal_patch_size become frame groups).")
_IMAGE_SIZE = flags.DEFINE_list("image_size", ["224", "224"], "Image H,W: multiples of 32.")
_VIDEO_SIZE = flags.DEFINE_list("video_size", ["224", "224"], "Video frame H,W: multiples of 32.")
_FPS = flags.DEFINE_float("fps", 2.0, "Sampling rate the timestamp text stands for (build_prompt).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random checkpoint and the synthetic image.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Optional path for the results as JSON.")

# Relative logits error above which a warning is printed: fp32 should sit near 1e-5.
WARN_REL_ERR = {"float32": 1e-3, "bfloat16": 5e-2}


def bench_100m() -> Qwen3VLConfig:
  """A Qwen3-VL-shaped dense model of ~94M parameters (16.4M of them in each of embed and lm_head)."""
  text = TextConfig(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=16,
                    num_attention_heads=8, num_key_value_heads=4, head_dim=64, rope_theta=5e6,
                    mrope_section=(12, 10, 10), max_position_embeddings=32768)
  vision = VisionConfig(depth=4, hidden_size=256, intermediate_size=1024, num_heads=4, out_hidden_size=512,
                        num_position_embeddings=2304, deepstack_visual_indexes=(0, 1, 2))
  return Qwen3VLConfig(text=text, vision=vision, image_token_id=31995, video_token_id=31996,
                       vision_start_token_id=31997, vision_end_token_id=31998)


def make_checkpoint(tmp: str) -> str:
  if _CHECKPOINT.value:
    return _CHECKPOINT.value
  config = bench_100m() if _PRESET.value == "bench-100m" else qwen3_vl.preset(_PRESET.value)
  qwen3_vl.save_pretrained(qwen3_vl.init_random(config, seed=_SEED.value), tmp)  # fp32 weights on disk
  return tmp


def make_batch(config: Qwen3VLConfig) -> dict[str, np.ndarray]:
  """The demo's prompt (image, then video frame groups each after timestamp text), tiled --batch times."""
  (ih, iw), (vh, vw) = [int(s) for s in _IMAGE_SIZE.value], [int(s) for s in _VIDEO_SIZE.value]
  image_pixels, image_grid = patchify(normalize(synthetic_image(ih, iw, seed=_SEED.value)[None]), config.vision)
  video_pixels, video_grid = patchify(normalize(synthetic_video(vh, vw, frames=_FRAMES.value)), config.vision)
  ids = build_prompt(config, image_grid, video_grid, _FPS.value)
  b = _BATCH.value
  return dict(input_ids=np.repeat(ids, b, 0), attention_mask=np.ones((b, ids.shape[1]), np.int64),
              pixel_values=np.tile(image_pixels, (b, 1)), image_grid_thw=np.tile(image_grid, (b, 1)),
              pixel_values_videos=np.tile(video_pixels, (b, 1)), video_grid_thw=np.tile(video_grid, (b, 1)))


def busy_seconds() -> tuple[float, float]:
  """(CPU-seconds all processes spent busy, CPU-seconds this process spent), from /proc/stat."""
  with open("/proc/stat") as f:
    jiffies = [int(x) for x in f.readline().split()[1:]]
  busy = sum(jiffies) - jiffies[3] - jiffies[4]  # minus idle and iowait
  own = os.times()
  return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def timed(fn, repeats: int) -> tuple[list[float], object, float]:
  """Seconds of each of `repeats` calls of fn, the last result, and the share of all cores that
  other processes kept busy meanwhile (timings are only trustworthy when it is near 0)."""
  times, out = [], None
  busy0, own0 = busy_seconds()
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  busy1, own1 = busy_seconds()
  foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / (os.cpu_count() * sum(times))
  return times, out, foreign


def run_ours(path: str, batch: dict) -> dict:
  model = qwen3_vl.from_pretrained(path, dtype=getattr(jnp, _DTYPE.value))
  call = lambda: jax.block_until_ready(model(**batch))
  (first,), _, _ = timed(call, 1)
  times, logits, foreign = timed(call, _REPEATS.value)
  return dict(config=model.config, compile_s=first, ms=1e3 * statistics.median(times), foreign=foreign,
              logits=np.asarray(logits.astype(jnp.float32)))


def run_peer(path: str, batch: dict, config: Qwen3VLConfig) -> dict:
  import transformers  # imported late: only this half of the benchmark needs it
  cls = (transformers.Qwen3VLMoeForConditionalGeneration if config.is_moe
         else transformers.Qwen3VLForConditionalGeneration)
  torch.set_num_threads(os.cpu_count())
  model = cls.from_pretrained(path, attn_implementation="sdpa", dtype=getattr(torch, _DTYPE.value)).eval()
  ids = batch["input_ids"]
  token_type = np.where(ids == config.image_token_id, 1, np.where(ids == config.video_token_id, 2, 0))
  kwargs = {k: torch.from_numpy(v) for k, v in batch.items()}
  for k in ("pixel_values", "pixel_values_videos"):
    kwargs[k] = kwargs[k].to(model.dtype)
  kwargs["mm_token_type_ids"] = torch.from_numpy(token_type)
  with torch.inference_mode():
    call = lambda: model(**kwargs, use_cache=False).logits
    call()  # warm-up
    times, logits, foreign = timed(call, _REPEATS.value)
  return dict(ms=1e3 * statistics.median(times), foreign=foreign, logits=logits.float().numpy(),
              threads=torch.get_num_threads())


def main(argv):
  del argv
  with tempfile.TemporaryDirectory(prefix="bench_forward_") as tmp:
    path = make_checkpoint(tmp)
    config = Qwen3VLConfig.from_json_file(os.path.join(path, "config.json"))
    batch = make_batch(config)
    ours = run_ours(path, batch)
    peer = run_peer(path, batch, ours["config"])
  err = float(np.abs(ours["logits"].astype(np.float64) - peer["logits"]).max() / np.abs(peer["logits"]).max())
  ids = batch["input_ids"]
  result = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "preset": os.path.abspath(_CHECKPOINT.value) if _CHECKPOINT.value else _PRESET.value,
      "dtype": _DTYPE.value,
      "batch": int(ids.shape[0]),
      "prompt_tokens": int(ids.shape[1]),
      "vision_tokens": int(np.isin(ids[0], [config.image_token_id, config.video_token_id]).sum()),
      "image_grid_thw": batch["image_grid_thw"][0].tolist(),
      "video_grid_thw": batch["video_grid_thw"][0].tolist(),
      "params": qwen3_vl.count_params(ours["config"])["total"],
      "ours_compile_s": round(ours["compile_s"], 3),
      "ours_steady_ms": round(ours["ms"], 2),
      "transformers_ms": round(peer["ms"], 2),
      "speedup_peer_over_ours": round(peer["ms"] / ours["ms"], 3),
      "logits_rel_max_abs_diff": err,
      "repeats": _REPEATS.value,
      "foreign_cpu_load": {"ours": round(ours["foreign"], 3), "peer": round(peer["foreign"], 3)},
      "jax_backend": jax.default_backend(),
      "jax_device": jax.devices()[0].device_kind,
      "torch_threads": peer["threads"],
      "versions": {"jax": jax.__version__, "torch": torch.__version__,
                   "transformers": __import__("transformers").__version__},
  }
  rows = [("date", result["date"]), ("preset / dtype / batch", f"{result['preset']} / {_DTYPE.value} / "
                                     f"{result['batch']}"),
          ("prompt tokens (vision)", f"{result['prompt_tokens']} ({result['vision_tokens']})"),
          ("params", f"{result['params'] / 1e6:.1f}M"),
          ("ours compile s (first call)", f"{result['ours_compile_s']:.2f}"),
          ("ours steady ms (median)", f"{result['ours_steady_ms']:.1f}"),
          ("transformers ms (median)", f"{result['transformers_ms']:.1f}"),
          ("speedup (peer / ours)", f"{result['speedup_peer_over_ours']:.2f}x"),
          ("logits max|diff| / max|peer|", f"{err:.2e}"),
          ("jax backend / device", f"{result['jax_backend']} / {result['jax_device']}"),
          ("torch threads", str(result["torch_threads"])),
          ("other processes' CPU share", f"ours {ours['foreign']:.0%}, peer {peer['foreign']:.0%}")]
  width = max(len(k) for k, _ in rows)
  print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
  if err > WARN_REL_ERR[_DTYPE.value]:
    print(f"WARNING: logits differ by {err:.2e} relative, above {WARN_REL_ERR[_DTYPE.value]:.0e} for {_DTYPE.value}")
  if max(ours["foreign"], peer["foreign"]) > 0.1:
    print("WARNING: other processes used the CPU while timing; the ms above are not trustworthy")
  if _JSON_OUT.value:
    atomic_write_json(_JSON_OUT.value, result)
    print(f"results written to {_JSON_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
