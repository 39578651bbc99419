"""flash_attention: one entry point that picks the XLA reference or a Pallas kernel.

The Pallas path is a jax.custom_vjp: the forward kernel saves the (base-2) log-sum-exp, and two
backward kernels recompute the probabilities block by block for dQ and for dK/dV, so neither pass
holds an [L, S] matrix. Padding to the block sizes happens here, outside the custom VJP, so autodiff
slices the gradients back for free.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from taskmem_jax.kernels.flash_attention import pallas_gpu, pallas_tpu, reference, xla_chunked

Array = jax.Array


IMPLS = ("auto", "xla", "pallas", "chunked")


_TARGET = contextvars.ContextVar("taskmem_kernels_target", default=None)


def platform() -> str:
  """The platform the kernels are built for: target_platform's, else jax.default_backend()."""
  return _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def target_platform(name: str):
  """Build the kernels for ``name`` ("tpu", "gpu"/"cuda" or "cpu") whatever this host runs: compiled Mosaic or
  Triton kernels, not interpret mode. For ahead-of-time lowering on a CPU host (experiments/aot.py); only
  the trace inside the block is affected."""
  name = {"cuda": "gpu", "rocm": "gpu"}.get(name, name)
  if name not in ("tpu", "gpu", "cpu"):
    raise ValueError(f"target platform {name!r}: expected 'tpu', 'gpu' ('cuda') or 'cpu'")
  token = _TARGET.set(name)
  try:
    yield
  finally:
    _TARGET.reset(token)


def resolve_impl(impl: str) -> str:
  """"auto" -> "pallas" on GPU and TPU, "xla" on CPU (where the kernels only run interpreted)."""
  if impl not in IMPLS:
    raise ValueError(f"attention impl={impl!r}: expected one of {IMPLS}")
  if impl == "auto":
    return "pallas" if platform() in ("gpu", "tpu") else "xla"
  return impl


def default_backend() -> str:
  """Which kernel family: "tpu" (Mosaic TPU) on a TPU, else "gpu" (Triton; also what CPU interprets)."""
  return "tpu" if platform() == "tpu" else "gpu"


def default_interpret() -> bool:
  """Interpret mode off the accelerators (CPU)."""
  return platform() not in ("gpu", "tpu")


# xla_chunked's block (queries and keys): a [B, Hq, 512, 512] fp32 block of scores is 1 MiB per head and row.
CHUNK = 512


def _next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


class _Static(NamedTuple):
  scale: float
  causal: bool
  block_q: int
  block_k: int
  interpret: bool
  backend: str  # "gpu" (pallas_gpu.py layouts), "tpu" (pallas_tpu.py layouts) or "xla" (xla_chunked.py)

  def kernels(self):
    module = {"tpu": pallas_tpu, "gpu": pallas_gpu, "xla": xla_chunked}[self.backend]
    return module, {k: v for k, v in self._asdict().items() if k != "backend"}


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _flash(q, k, v, q_seg, kv_seg, q_offset, st: _Static):
  module, kw = st.kernels()
  return module.forward(q, k, v, q_seg, kv_seg, q_offset, **kw)[0]


def _flash_fwd(q, k, v, q_seg, kv_seg, q_offset, st: _Static):
  module, kw = st.kernels()
  out, lse = module.forward(q, k, v, q_seg, kv_seg, q_offset, **kw)
  return out, (q, k, v, q_seg, kv_seg, q_offset, out, lse)


def _flash_bwd(st: _Static, res, do):
  q, k, v, q_seg, kv_seg, q_offset, out, lse = res
  module, kw = st.kernels()
  dq, dk, dv = module.backward(q, k, v, q_seg, kv_seg, q_offset, out, lse, do, **kw)
  return dq, dk, dv, None, None, None  # integer inputs: no cotangent


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q: Array, k: Array, v: Array, *, causal: bool = False, q_segment_ids: Array | None = None,
                    kv_segment_ids: Array | None = None, q_offset: Array | int = 0, scale: float | None = None,
                    impl: str = "auto", interpret: bool | None = None, block_q: int | None = None,
                    block_k: int | None = None, backend: str | None = None) -> Array:
  """Multi-head attention with GQA, causal masking and segment ids.

  q: [B, L, Hq, D]; k, v: [B, S, Hkv, D] with Hq a multiple of Hkv (query head h reads KV head
  h // (Hq // Hkv); K/V are never repeated). Returns [B, L, Hq, D] in q.dtype.
  causal: query i (at cache slot q_offset + i) sees keys j <= q_offset + i.
  q_segment_ids [B, L] / kv_segment_ids [B, S]: non-negative ints; a query sees only keys with its
    segment id. Padding: give padding tokens their own id (the model uses 0 for padding, 1 for real
    tokens). Block-diagonal (per-frame) attention: one id per frame.
  q_offset: int or [B] int array (may be traced): the slot of query 0 when S is a KV cache.
  A query that sees no key returns zeros. Scores and softmax run in fp32; the output is cast once.
  impl: "xla" (reference.py, plain jnp, [L, S] scores), "chunked" (xla_chunked.py: plain XLA in blocks with a
    recomputing backward, memory O(L + blocks): for long prompts where no kernel runs), "pallas" (a kernel;
    interpret mode on CPU), or "auto" (resolve_impl).
  backend: "gpu" (pallas_gpu.py, Triton) or "tpu" (pallas_tpu.py, Mosaic TPU); default: the device's
    (on CPU "gpu", interpreted). Blocks default to 64 (GPU) or 128 (TPU) and are clipped to the
    (power-of-two rounded) sequence lengths.
  """
  b, l, hq, d = q.shape
  s, hkv = k.shape[1], k.shape[2]
  if hq % hkv:
    raise ValueError(f"{hq} query heads are not a multiple of {hkv} KV heads")
  chunked = resolve_impl(impl) == "chunked"
  backend = "xla" if chunked else default_backend() if backend is None else backend
  if backend not in ("gpu", "tpu", "xla"):
    raise ValueError(f"backend={backend!r}: expected 'gpu' or 'tpu'")
  default_block = {"tpu": 128, "gpu": 64, "xla": CHUNK}[backend]
  block_q, block_k = block_q or default_block, block_k or default_block
  if block_q & (block_q - 1) or block_k & (block_k - 1):
    raise ValueError(f"block_q={block_q}, block_k={block_k}: must be powers of two (Triton's tiles)")
  scale = d**-0.5 if scale is None else float(scale)
  if resolve_impl(impl) == "xla":
    return reference.attention(q, k, v, causal=causal, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
                               q_offset=q_offset, scale=scale)
  interpret = (default_interpret() if interpret is None else interpret) and not chunked
  # Mosaic TPU tiles are 8 x 128: a key block is a row of 128 lanes (its segment ids), a query block
  # 8-row aligned. Triton's dot needs 16.
  min_q, min_k = (16, 16) if interpret or backend != "tpu" else (8, 128)
  bq = min(block_q, max(min_q, _next_pow2(l)))
  bk = min(block_k, max(min_k, _next_pow2(s)))
  lp, sp, dp = _round_up(l, bq), _round_up(s, bk), d if chunked else max(16, _next_pow2(d))
  q_seg = jnp.zeros((b, l), jnp.int32) if q_segment_ids is None else q_segment_ids.astype(jnp.int32)
  kv_seg = jnp.zeros((b, s), jnp.int32) if kv_segment_ids is None else kv_segment_ids.astype(jnp.int32)
  # Padded queries (-2) and keys (-1) match nothing; zero columns of D change no score.
  q_seg = jnp.pad(q_seg, ((0, 0), (0, lp - l)), constant_values=-2)
  kv_seg = jnp.pad(kv_seg, ((0, 0), (0, sp - s)), constant_values=-1)
  pad = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, dp - d))) if (n, dp) != x.shape[1::2] else x
  offset = jnp.broadcast_to(jnp.asarray(q_offset, jnp.int32), (b,))
  st = _Static(scale=scale, causal=causal, block_q=bq, block_k=bk, interpret=bool(interpret), backend=backend)
  q, k, v = pad(q, lp), pad(k, sp), pad(v, sp)
  if backend == "tpu":  # heads-major, segment ids as a column and a row (pallas_tpu.py); XLA transposes
    heads_major = lambda x: x.transpose(0, 2, 1, 3)
    out = _flash(heads_major(q), heads_major(k), heads_major(v), q_seg[:, :, None], kv_seg[:, None, :], offset, st)
    out = heads_major(out)
  else:
    out = _flash(q, k, v, q_seg, kv_seg, offset, st)
  return out[:, :l, :, :d]
