"""Attention benchmarks at Qwen3-VL-30B-A3B shapes: our Pallas kernels vs jax.nn.dot_product_attention.

  python -m taskmem_jax.kernels.bench                 # on a GPU or TPU: the full table (markdown) on stdout
                                          # (on a TPU "pallas (ours)" decode is the XLA reference: no TPU decode kernel)
  python -m taskmem_jax.kernels.bench --write         # ... and append it to taskmem_jax/kernels/BENCHMARKS.md with date and device
  python -m taskmem_jax.kernels.bench --smoke         # tiny shapes, interpret mode: checks the script itself on CPU

Text decoder of 30B-A3B: 32 query heads, 4 KV heads (GQA 8), head dim 128, bf16. Cases:
  prefill   causal, B=1, L = S = 8k and 24k (forward only);
  train     causal, B=1, L = S = 8k, forward + backward (gradients of q, k, v);
  decode    one query per row over a 24k cache, B = 1 and 64, every row at full length.
Baselines: jax.nn.dot_product_attention(implementation="xla" | "cudnn"); a baseline that fails (cuDNN
missing, out of memory) is reported as such. Percentages are of the peaks measured here on the same
device (a large bf16 matmul; a large device-to-device copy), not of the data sheet's.
FLOPs: 4 * B * Hq * L * S * D, halved when causal; backward = 2.5x forward (5 matmuls to 2).
Decode is memory-bound: its figure of merit is bytes of K and V read per second.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from taskmem_jax.kernels.decode_attention import decode_attention
from taskmem_jax.kernels.flash_attention import flash_attention, reference

HQ, HKV, D = 32, 4, 128


def timeit(fn, *args, reps: int = 10) -> float:
  """Median seconds per call of a jitted fn (after one compile-and-warm-up call)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def measured_peaks(smoke: bool) -> tuple[float, float]:
  """(bf16 matmul FLOP/s, copy bytes/s) measured on this device."""
  n = 256 if smoke else 8192
  a = jnp.ones((n, n), jnp.bfloat16)
  mm = jax.jit(lambda a: a @ a)
  flops = 2 * n**3 / timeit(mm, a)
  x = jnp.ones((1 << (16 if smoke else 30),), jnp.bfloat16)  # 2 GiB on the GPU
  cp = jax.jit(lambda x: x * 2)
  bw = 2 * x.size * x.dtype.itemsize / timeit(cp, x)  # read + write
  return flops, bw


def _inputs(b, l, s, seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 3)
  q = jax.random.normal(ks[0], (b, l, HQ, D), jnp.bfloat16)
  k = jax.random.normal(ks[1], (b, s, HKV, D), jnp.bfloat16)
  v = jax.random.normal(ks[2], (b, s, HKV, D), jnp.bfloat16)
  return q, k, v


def _attn_fns(causal: bool, interpret: bool):
  if interpret:
    blocks = dict(block_q=32, block_k=32)
  else:  # GPU: wide query tiles, narrower key tiles (the Triton kernel's registers); TPU: the api's 128s
    blocks = dict(block_q=128, block_k=64) if jax.default_backend() == "gpu" else {}
  ours = lambda q, k, v: flash_attention(q, k, v, causal=causal, impl="pallas", interpret=interpret, **blocks)
  fns = {"pallas (ours)": ours}
  for impl in ("xla", "cudnn"):
    fns[f"jax.nn {impl}"] = (lambda impl: lambda q, k, v: jax.nn.dot_product_attention(
        q, k, v, is_causal=causal, implementation=impl))(impl)
  return fns


def _run(fn, *args) -> float | str:
  try:
    return timeit(jax.jit(fn), *args)
  except Exception as e:  # a baseline that cannot run here (no cuDNN, OOM): say why, keep going
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return "OOM" if "RESOURCE_EXHAUSTED" in msg or "out of memory" in msg.lower() else f"n/a ({msg[:60]})"


def bench(smoke: bool) -> list[str]:
  interpret = smoke
  peak_flops, peak_bw = measured_peaks(smoke)
  rows = [f"measured peaks: bf16 matmul {peak_flops / 1e12:.1f} TFLOP/s, copy {peak_bw / 1e9:.0f} GB/s", "",
          "| case | impl | time (ms) | TFLOP/s | % of matmul peak | GB/s (K+V) | % of copy bandwidth |",
          "|---|---|---|---|---|---|---|"]

  def row(case, impl, t, flops, kv_bytes):
    if isinstance(t, str):
      rows.append(f"| {case} | {impl} | {t} | | | | |")
      return
    tf = flops / t
    gbs = kv_bytes / t
    rows.append(f"| {case} | {impl} | {t * 1e3:.3f} | {tf / 1e12:.1f} | {100 * tf / peak_flops:.0f}% | "
                f"{gbs / 1e9:.0f} | {100 * gbs / peak_bw:.0f}% |")

  lengths = (64, 96) if smoke else (8192, 24576)
  q, k, v = _inputs(1, lengths[0], lengths[0])  # first, is the compiled kernel right?
  fns = _attn_fns(True, interpret)
  f32 = lambda x: x.astype(jnp.float32)
  exact = jax.jit(lambda q, k, v: reference.attention(f32(q), f32(k), f32(v), causal=True))(q, k, v)
  errs = {name: float(jnp.abs(f32(jax.jit(fns[name])(q, k, v)) - exact).max())
          for name in ("pallas (ours)", "jax.nn xla")}
  rows.insert(1, f"check: prefill L={lengths[0]}, bf16 inputs, max |out - fp32 reference|: "
                 + ", ".join(f"{name} {e:.2e}" for name, e in errs.items()))
  for n in lengths:  # prefill
    q, k, v = _inputs(1, n, n)
    flops = 4 * HQ * n * n * D / 2
    for name, fn in _attn_fns(True, interpret).items():
      row(f"prefill L={n}", name, _run(fn, q, k, v), flops, 2 * k.size * 2)

  n = lengths[0]  # training step: forward + backward
  q, k, v = _inputs(1, n, n)
  flops = 3.5 * 4 * HQ * n * n * D / 2
  for name, fn in _attn_fns(True, interpret).items():
    train = lambda q, k, v, fn=fn: jax.grad(lambda q, k, v: fn(q, k, v).astype(jnp.float32).sum(), (0, 1, 2))(q, k, v)
    row(f"train fwd+bwd L={n}", name, _run(train, q, k, v), flops, 2 * k.size * 2)

  s = 128 if smoke else 24576
  for b in ((1, 2) if smoke else (1, 64)):  # decode: one token per row over a full cache
    q, k, v = _inputs(b, 1, s)
    lengths_b = jnp.full((b,), s, jnp.int32)
    ours = lambda q, k, v: decode_attention(q[:, 0], k, v, lengths_b, impl="pallas", interpret=interpret)
    fns = {"pallas (ours)": ours}
    for impl in ("xla", "cudnn"):
      fns[f"jax.nn {impl}"] = (lambda impl: lambda q, k, v: jax.nn.dot_product_attention(
          q, k, v, key_value_seq_lengths=lengths_b, implementation=impl))(impl)
    for name, fn in fns.items():
      row(f"decode B={b} S={s}", name, _run(fn, q, k, v), 4 * b * HQ * s * D, 2 * k.size * 2)
  return rows


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--smoke", action="store_true", help="tiny shapes in interpret mode (any backend)")
  ap.add_argument("--write", action="store_true", help="append the table to taskmem_jax/kernels/BENCHMARKS.md")
  args = ap.parse_args(argv)
  if not args.smoke and jax.default_backend() not in ("gpu", "tpu"):
    sys.exit(f"kernels/bench.py needs a GPU or TPU (backend here: {jax.default_backend()}); use --smoke on CPU")
  device = jax.devices()[0].device_kind
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  header = [f"## {stamp}, {device}, jax {jax.__version__}" + (" (smoke: interpret mode, tiny shapes)" if args.smoke
                                                                 else ""), ""]
  text = "\n".join(header + bench(args.smoke)) + "\n"
  print(text)
  if args.write:
    path = os.path.join(os.path.dirname(__file__), "BENCHMARKS.md")
    with open(path, "a") as f:
      f.write("\n" + text)


if __name__ == "__main__":
  main()
