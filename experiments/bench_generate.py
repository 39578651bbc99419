r"""Generation benchmark: taskmem_jax ``generate`` against transformers' ``model.generate``, one run.

On the same checkpoint (random --preset unless --checkpoint DIR) and the same prompt (the image +
video prompt of experiments/bench_forward.py, or --text_only: --prompt_tokens random text tokens),
tiled --batch times, greedy, no stop tokens, --max_new_tokens (T) new tokens per row:
  - ours: taskmem_jax.sampling.generate(num_samples=n); the first call (trace + compile + run) in
    seconds, then the median of --repeats calls of generate(T) (total) and generate(1) (prefill);
  - peer: transformers generate(do_sample=False, min_new_tokens=T, use_cache=True), sdpa attention,
    torch.inference_mode, torch threads = os.cpu_count(); each prompt repeated n times (greedy
    transformers has no num_return_sequences); one warm-up, then the same two medians;
  - decode tokens/s = B*n*(T-1) / (total - prefill): both generate(1) runs do the prompt pass and
    generate(T) adds T-1 single-token steps; end-to-end tokens/s = B*n*T / total;
  - correctness: the fraction of generated tokens equal between ours and the peer (1.0 in fp32);
  - on a GPU backend: bytes a decode step must read (text params once + the KV cache at the mean
    cache length) / measured step time, as a fraction of --hbm_gbps.
The goal checked at the end: our decode tokens/s >= 3x transformers' (the ~100M config on CPU).
Flags --preset, --checkpoint, --dtype, --batch, --repeats, --seed, --frames, --json_out, ... are
bench_forward's (imported with it).

  PYTHONPATH=. python experiments/bench_generate.py
  PYTHONPATH=. python experiments/bench_generate.py --batch=8
  PYTHONPATH=. python experiments/bench_generate.py --text_only --prompt_tokens=256 --json_out=/tmp/gen.json
"""

from __future__ import annotations

import datetime
import os
import statistics
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl import app, flags
from flax import nnx

from experiments import bench_forward as bf  # its flags: preset, checkpoint, dtype, batch, repeats, json_out, ...
from taskmem_jax import cli
from taskmem_jax.io import atomic_write_json
from taskmem_jax.models import qwen3_vl
from taskmem_jax.models.qwen3_vl import Qwen3VLConfig
from taskmem_jax.sampling import geometric_bucket, generate

flags.FLAGS.set_default("repeats", 3)
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "New tokens per row (T >= 2).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Completions per prompt (ours: one shared prefill).")
_TEXT_ONLY = flags.DEFINE_bool("text_only", False, "A text prompt of --prompt_tokens instead of image + video.")
_PROMPT_TOKENS = flags.DEFINE_integer("prompt_tokens", 256, "Prompt length with --text_only.")
_HBM_GBPS = flags.DEFINE_float("hbm_gbps", 3350.0, "Peak memory bandwidth, GB/s (GPU only; H100 SXM 3350).")
GOAL = 3.0  # decode tokens/s, ours / transformers


def make_inputs(config: Qwen3VLConfig) -> dict[str, np.ndarray]:
  if not _TEXT_ONLY.value:
    return bf.make_batch(config)
  row = np.random.default_rng(bf._SEED.value).integers(10, min(config.image_token_id, config.text.vocab_size) - 10,
                                                        (1, _PROMPT_TOKENS.value))
  return dict(input_ids=np.repeat(row, bf._BATCH.value, 0),
              attention_mask=np.ones((bf._BATCH.value, _PROMPT_TOKENS.value), np.int64))


def tile(batch: dict, n: int) -> dict:
  """Each prompt n times (every row is the same prompt, so pixel rows just tile)."""
  return {k: np.repeat(v, n, 0) if k in ("input_ids", "attention_mask") else np.tile(v, (n, 1))
          for k, v in batch.items()}


def split_times(call, repeats: int) -> dict:
  """Medians of call(T) and call(1) in seconds, the tokens of call(T), other processes' CPU share."""
  total, out, foreign_t = bf.timed(lambda: call(_MAX_NEW.value), repeats)
  prefill, _, foreign_p = bf.timed(lambda: call(1), repeats)
  return dict(total_s=statistics.median(total), prefill_s=statistics.median(prefill), tokens=out,
              foreign=max(foreign_t, foreign_p))


def run_ours(path: str, batch: dict) -> dict:
  model = qwen3_vl.from_pretrained(path, dtype=getattr(jnp, bf._DTYPE.value))
  call = lambda t: generate(model, batch, max_new_tokens=t, num_samples=_NUM_SAMPLES.value).tokens
  (compile_s,), _, _ = bf.timed(lambda: call(_MAX_NEW.value), 1)
  call(1)  # compiles the prefill-only shapes
  return dict(split_times(call, bf._REPEATS.value), compile_s=compile_s, model=model)


def run_peer(path: str, batch: dict, config: Qwen3VLConfig) -> dict:
  import transformers  # imported late: only this half of the benchmark needs it
  cls = (transformers.Qwen3VLMoeForConditionalGeneration if config.is_moe
         else transformers.Qwen3VLForConditionalGeneration)
  torch.set_num_threads(os.cpu_count())
  model = cls.from_pretrained(path, attn_implementation="sdpa", dtype=getattr(torch, bf._DTYPE.value)).eval()
  model.generation_config.pad_token_id = 0  # ours pads with 0 too; silences the warning
  ids = batch["input_ids"]
  kwargs = {k: torch.from_numpy(v) for k, v in batch.items()}
  for k in ("pixel_values", "pixel_values_videos"):
    if k in kwargs:
      kwargs[k] = kwargs[k].to(model.dtype)
  kwargs["mm_token_type_ids"] = torch.from_numpy(
      np.where(ids == config.image_token_id, 1, np.where(ids == config.video_token_id, 2, 0)))
  with torch.inference_mode():
    call = lambda t: model.generate(**kwargs, max_new_tokens=t, min_new_tokens=t, do_sample=False,
                                    use_cache=True)[:, ids.shape[1]:].numpy()
    call(_MAX_NEW.value)  # warm-up
    return dict(split_times(call, bf._REPEATS.value), threads=torch.get_num_threads())


def rates(r: dict, rows: int) -> dict:
  t = _MAX_NEW.value
  return dict(prefill_ms=round(1e3 * r["prefill_s"], 2), total_ms=round(1e3 * r["total_s"], 2),
              decode_tok_s=round(rows * (t - 1) / (r["total_s"] - r["prefill_s"]), 2),
              e2e_tok_s=round(rows * t / r["total_s"], 2), foreign_cpu=round(r["foreign"], 3))


def hbm_fraction(model, rows: int, prompt_len: int, step_s: float) -> dict:
  """Bytes one decode step must read: text params (not the embedding table unless tied, not vision)
  + K and V at the mean cache length; as a fraction of --hbm_gbps."""
  lm = model.language_model
  nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(nnx.state(tree)))
  params = nbytes(lm) + (nbytes(model.lm_head) - lm.embed_tokens.weight[...].nbytes if model.lm_head else 0)
  t = model.config.text
  mean_len = prompt_len + (_MAX_NEW.value - 1) / 2
  kv = 2 * t.num_hidden_layers * rows * mean_len * t.num_key_value_heads * t.head_dim * model.dtype.itemsize
  gbps = (params + kv) / step_s / 1e9
  return dict(bytes_per_step=int(params + kv), achieved_gbps=round(gbps, 1), fraction=round(gbps / _HBM_GBPS.value, 4))


def main(argv):
  del argv
  if _MAX_NEW.value < 2:
    raise app.UsageError("--max_new_tokens must be >= 2 (decode rate needs T - 1 > 0)")
  with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
    path = bf.make_checkpoint(tmp)
    config = Qwen3VLConfig.from_json_file(os.path.join(path, "config.json"))
    batch = make_inputs(config)
    ours = run_ours(path, batch)
    peer = run_peer(path, tile(batch, _NUM_SAMPLES.value), config)
  rows, prompt_len = batch["input_ids"].shape[0] * _NUM_SAMPLES.value, batch["input_ids"].shape[1]
  agree = float((ours["tokens"] == peer["tokens"]).mean()) if ours["tokens"].shape == peer["tokens"].shape else 0.0
  o, p = rates(ours, rows), rates(peer, rows)
  ratio = {k: round(o[k] / p[k], 3) for k in ("decode_tok_s", "e2e_tok_s")}
  result = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "preset": os.path.abspath(bf._CHECKPOINT.value) if bf._CHECKPOINT.value else bf._PRESET.value,
      "dtype": bf._DTYPE.value, "batch": int(batch["input_ids"].shape[0]), "num_samples": _NUM_SAMPLES.value,
      "prompt": "text" if _TEXT_ONLY.value else "image+video", "prompt_tokens": int(prompt_len),
      "ours_bucket": geometric_bucket(prompt_len), "max_new_tokens": _MAX_NEW.value, "repeats": bf._REPEATS.value,
      "params": qwen3_vl.count_params(config)["total"], "ours_compile_s": round(ours["compile_s"], 3),
      "ours": o, "transformers": p, "ratio_ours_over_peer": ratio, "token_agreement": agree,
      "goal_decode_ratio": GOAL, "goal_met": ratio["decode_tok_s"] >= GOAL,
      "jax_backend": jax.default_backend(), "jax_device": jax.devices()[0].device_kind,
      "torch_threads": peer["threads"],
      "versions": {"jax": jax.__version__, "torch": torch.__version__,
                   "transformers": __import__("transformers").__version__},
  }
  if jax.default_backend() == "gpu":
    step_s = (ours["total_s"] - ours["prefill_s"]) / (_MAX_NEW.value - 1)
    result["hbm_bound"] = hbm_fraction(ours["model"], rows, geometric_bucket(prompt_len), step_s)
  fmt = lambda r: f"{r['prefill_ms']:.1f} / {r['decode_tok_s']:.1f} / {r['e2e_tok_s']:.1f}"
  table = [("date", result["date"]),
           ("device", f"{result['jax_backend']} / {result['jax_device']} (torch threads {peer['threads']})"),
           ("preset / dtype", f"{result['preset']} / {result['dtype']}"),
           ("params", f"{result['params'] / 1e6:.1f}M"),
           ("prompt tokens (ours' bucket)", f"{prompt_len} {result['prompt']} ({result['ours_bucket']})"),
           ("batch x samples x new tokens", f"{result['batch']} x {_NUM_SAMPLES.value} x {_MAX_NEW.value}"),
           ("ours compile s (first call)", f"{result['ours_compile_s']:.2f}"),
           ("ours prefill ms / decode tok/s / e2e tok/s", fmt(o)),
           ("peer prefill ms / decode tok/s / e2e tok/s", fmt(p)),
           ("ours / peer: decode tok/s, e2e tok/s", f"{ratio['decode_tok_s']:.2f}x, {ratio['e2e_tok_s']:.2f}x"),
           ("token agreement (ours vs peer)", f"{agree:.4f}"),
           ("other processes' CPU share", f"ours {o['foreign_cpu']:.0%}, peer {p['foreign_cpu']:.0%}"),
           (f"goal: decode >= {GOAL:g}x peer", "MET" if result["goal_met"] else "NOT MET")]
  if "hbm_bound" in result:
    h = result["hbm_bound"]
    table.append(("HBM: achieved GB/s (of --hbm_gbps)", f"{h['achieved_gbps']:.0f} ({h['fraction']:.1%})"))
  width = max(len(k) for k, _ in table)
  print("\n".join(f"{k:<{width}}  {v}" for k, v in table))
  if agree < 1.0 and bf._DTYPE.value == "float32":
    print(f"WARNING: only {agree:.2%} of generated tokens agree with transformers in float32 (expected 100%)")
  if max(o["foreign_cpu"], p["foreign_cpu"]) > 0.1:
    print("WARNING: other processes used the CPU while timing; the rates above are not trustworthy")
  if bf._JSON_OUT.value:
    atomic_write_json(bf._JSON_OUT.value, result)
    print(f"results written to {bf._JSON_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
