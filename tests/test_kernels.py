"""kernels/ against their plain-jnp references, in Pallas interpret mode on the CPU (CI has no GPU).

On a GPU the same tests run the compiled Triton kernels (interpret defaults to off there).

Shapes are tiny on purpose (interpret mode runs the kernel body per grid step in Python-traced XLA),
but they cover what the GPU sees: lengths that are not multiples of the block size, GQA ratios 1 and 8
(2 in the model tests), head dims 64 and 128, causal with per-row cache offsets, padding and
block-diagonal segment ids, queries that see no key, bf16 inputs, forward and gradients through the
custom VJP. Then the model: a one-layer Qwen3-VL's logits and gradients with attention_impl="pallas"
equal the XLA path's.

Compiling is nearly all of these tests' time (each program runs once on tiny shapes): each case is one
program (forward and gradients together), and the programs built here compile with XLA's CPU backend at
LLVM -O0 (FAST), 2-3x faster. That changes only how well the machine code is optimised, not what is
computed: the kernels and their references run under the same options.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from taskmem_jax.kernels.decode_attention import decode_attention
from taskmem_jax.kernels.decode_attention import reference as decode_ref
from taskmem_jax.kernels.flash_attention import flash_attention
from taskmem_jax.kernels.flash_attention import reference as flash_ref
from taskmem_jax.models.qwen3_vl import layers

FAST = {"xla_backend_optimization_level": 0}


def _options():
  """FAST on the CPU; a GPU compiles as it always does."""
  return FAST if jax.default_backend() == "cpu" else None


def _jit(fn, **kw):
  return jax.jit(fn, compiler_options=_options(), **kw)


def _normal(rng, shape, dtype=jnp.float32):
  """Test data from numpy: jax.random.normal would compile a program for each shape (about 0.5 s each)."""
  return jnp.asarray(rng.standard_normal(shape, np.float32).astype(dtype))


def _qkv(seed, b, l, s, hq, hkv, d, dtype):
  rng = np.random.default_rng(seed)
  q, k, v = _normal(rng, (b, l, hq, d), dtype), _normal(rng, (b, s, hkv, d), dtype), _normal(rng, (b, s, hkv, d), dtype)
  w = _normal(rng, (b, l, hq, d))  # cotangent weights for the gradient check
  return q, k, v, w


def _close(a, b, tol):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  err = np.abs(a - b).max() / max(1.0, np.abs(b).max())
  assert err < tol, err


# (b, l, s, hq, hkv, d, causal, segments, q_offset, block, dtype). Each backend runs both cases; each case has
# queries that see no key (their output must be exactly 0, their gradients finite).
FLASH_CASES = {
    # Qwen3-VL-30B's GQA ratio, bf16: row 0 a whole causal prompt of 37 tokens (2 blocks of 16 + 5), row 1 a
    # prefill of 37 tokens at cache slot 27 of 64 whose first 30 slots are left padding (its first 3 queries
    # see no key)
    "causal-cache-pad-gqa8-bf16": (2, 37, 64, 8, 1, 64, True, "padding", (0, 27), 16, jnp.bfloat16),
    # the vision tower's per-frame attention (no GQA) as one block-diagonal sequence of frames of 20, 16 and
    # 14 (50 = 3 blocks of 16 + 2); in row 1 the first frame's keys are missing (20 queries without a key)
    "frames-gqa1-d128": (2, 50, 50, 2, 2, 128, False, "frames", 0, 16, jnp.float32),
}


def _segments(kind, b, l, s):
  if kind == "padding":  # row r has 30r padding tokens at the left of the cache
    kv = (jnp.arange(s)[None] >= 30 * jnp.arange(b)[:, None]).astype(jnp.int32)
    return jnp.ones((b, l), jnp.int32), kv
  ids = jnp.repeat(jnp.arange(3), jnp.array([20, 16, 14]), total_repeat_length=l)
  kv = jnp.broadcast_to(ids, (b, s)).at[1].set(jnp.where(ids == 0, 7, ids))  # 7: no query's segment
  return jnp.broadcast_to(ids, (b, l)), kv


@pytest.mark.parametrize("case,backend", [(c, b) for b in ("gpu", "tpu", "chunked") for c in FLASH_CASES])
@pytest.mark.slow
def test_flash_attention_forward_and_grads(case, backend):
  """backend "gpu": pallas_gpu.py (Triton), "tpu": pallas_tpu.py (Mosaic TPU); interpret mode on CPU;
  "chunked": xla_chunked.py (plain XLA blocks, impl="chunked")."""
  b, l, s, hq, hkv, d, causal, kind, q_offset, block, dtype = FLASH_CASES[case]
  q, k, v, w = _qkv(0, b, l, s, hq, hkv, d, dtype)
  q_seg, kv_seg = _segments(kind, b, l, s)
  q_offset = jnp.asarray(q_offset, jnp.int32)  # an array, read by the kernels at run time (per row)
  kw = dict(causal=causal, q_segment_ids=q_seg, kv_segment_ids=kv_seg, q_offset=q_offset)

  def out_and_grads(fn):  # the output and the gradients of (output * w).sum(), in one program
    def run(q, k, v):
      out, vjp = jax.vjp(fn, q, k, v)
      return out, vjp(w.astype(out.dtype))
    return _jit(run)(q, k, v)

  if backend == "chunked":
    kernel = lambda q, k, v: flash_attention(q, k, v, impl="chunked", block_q=block, block_k=block, **kw)
  else:
    kernel = lambda q, k, v: flash_attention(q, k, v, impl="pallas", block_q=block, block_k=block, backend=backend,
                                             interpret=True if backend != "gpu" else None, **kw)
  out, grads = out_and_grads(kernel)
  out_ref, grads_ref = out_and_grads(lambda q, k, v: flash_ref.attention(q, k, v, **kw))
  tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
  _close(out, out_ref, tol)
  for g, g_ref in zip(grads, grads_ref):
    assert g.dtype == dtype
    assert np.all(np.isfinite(np.asarray(g, np.float32)))
    _close(g, g_ref, tol)
  no_key = ~np.asarray(flash_ref.visibility(l, s, causal=causal, q_segment_ids=q_seg, kv_segment_ids=kv_seg,
                                            q_offset=jnp.broadcast_to(q_offset, (b,))).any(-1))
  assert no_key.sum() == (3 if causal else 20), no_key.sum()
  out = np.asarray(out, np.float32)
  assert np.all(out[no_key] == 0) and np.all(np.isfinite(out))


@pytest.mark.slow
def test_chunked_attention_memory_does_not_grow_with_l_times_s():
  """The compiler's temporaries for forward + backward of impl="chunked": 4x the tokens (16x the scores) must
  cost at most ~4x the memory (the inputs' and gradients' size grows 4x), while the dense reference grows
  with L x S. 1 row, 4 heads of 64, causal, fp32 on CPU."""
  def temp_bytes(impl, l):
    q, k, v, w = (jax.ShapeDtypeStruct((1, l, h, 64), jnp.float32) for h in (4, 2, 2, 4))  # compiled, never run
    def loss(q, k, v, w):
      out = flash_attention(q, k, v, causal=True, impl=impl) if impl == "chunked" else flash_ref.attention(
          q, k, v, causal=True)
      return (out * w).sum()
    # FAST changes the machine code, not the buffers: the same temp sizes as -O2
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v, w).compile(_options())
    return compiled.memory_analysis().temp_size_in_bytes

  small, large = temp_bytes("chunked", 1024), temp_bytes("chunked", 4096)
  dense_small, dense_large = temp_bytes("xla", 1024), temp_bytes("xla", 4096)
  assert large < 6 * small, (small, large)
  assert dense_large > 12 * dense_small, (dense_small, dense_large)
  assert large < dense_large / 8, (large, dense_large)


@pytest.mark.slow
@pytest.mark.parametrize("hq,hkv,d,splits,dtype", [(8, 1, 128, None, jnp.float32), (4, 2, 64, 3, jnp.bfloat16)])
def test_decode_attention_per_row_lengths(hq, hkv, d, splits, dtype):
  b, s = 3, 100  # S is not a multiple of the block; rows: full, partial with left padding, empty
  rng = np.random.default_rng(2)
  q, k, v = _normal(rng, (b, hq, d), dtype), _normal(rng, (b, s, hkv, d), dtype), _normal(rng, (b, s, hkv, d), dtype)
  lengths = jnp.array([100, 37, 0])
  kv_mask = jnp.arange(s)[None] >= jnp.array([[0], [5], [0]])
  out = _jit(lambda q, k, v: decode_attention(q, k, v, lengths, kv_mask=kv_mask, impl="pallas", block_k=16,
                                              num_splits=splits))(q, k, v)
  want = _jit(lambda q, k, v: decode_ref.decode_attention(q, k, v, lengths, kv_mask=kv_mask))(q, k, v)
  _close(out, want, 2e-2 if dtype == jnp.bfloat16 else 1e-5)
  assert np.all(np.asarray(out[2]) == 0)


@pytest.mark.parametrize("l,offset", [(5, 7), (1, 11)])  # prefill into a cache, and one decode step
def test_kernel_mask_matches_dense_mask(l, offset):
  """layers.kernel_attention (the model's "pallas" route) against dot_product_attention on KernelMask.dense."""
  b, s, hq, hkv, d = 2, 24, 4, 2, 32
  q, k, v, _ = _qkv(3, b, l, s, hq, hkv, d, jnp.float32)
  mask = layers.KernelMask(jnp.arange(s)[None] >= jnp.array([[0], [3]]), jnp.asarray(offset), causal=True)
  got = _jit(layers.kernel_attention, static_argnums=4)(q, k, v, mask, d**-0.5)
  _close(got, layers.dot_product_attention(q, k, v, mask.dense(l), d**-0.5), 1e-5)


@pytest.mark.parametrize("first_slot,s", [(0, 150), (37, 200)])  # a whole prompt, and a prefill into a cache
def test_causal_mask_blocks_equal_the_dense_mask(first_slot, s, monkeypatch):
  """The long-prompt path of dot_product_attention (query blocks that skip later keys) against the same
  call on the plain mask: 150 queries over 3 blocks of 64 (the last one short), GQA 2, row 1 left-padded
  so its first queries see no key (uniform weights over all S keys on both paths)."""
  b, l, hq, hkv, d = 2, 150, 4, 2, 32
  q, k, v, _ = _qkv(5, b, l, s, hq, hkv, d, jnp.float32)
  query_slot = first_slot + jnp.arange(l)
  real = jnp.arange(s)[None] >= jnp.array([[0], [first_slot + 9]])  # row 1: 9 padding queries
  visible = (jnp.arange(s)[None, :] <= query_slot[:, None])[None] & real[:, None, :]
  assert not bool(visible[1, 0].any())
  monkeypatch.setattr(layers, "ATTENTION_BLOCK", 64)
  dense = _jit(layers.dot_product_attention, static_argnums=4)(q, k, v, visible, d**-0.5)
  blocked = _jit(layers.dot_product_attention, static_argnums=4)(q, k, v, layers.CausalMask(visible, first_slot),
                                                                  d**-0.5)
  _close(blocked, dense, 1e-5)


def _small(impl="auto", seed=0):
  """tiny cut to one decoder layer and one vision block (with its DeepStack tap): every kind of attention call
  the model makes (text: causal, GQA 2, over a cache; vision: per-frame), at a fraction of tiny's compile time."""
  from taskmem_jax.models.qwen3_vl import init_random, preset
  cfg = preset("tiny")
  cfg = cfg.replace(text=dataclasses.replace(cfg.text, num_hidden_layers=1, attention_impl=impl),
                    vision=dataclasses.replace(cfg.vision, depth=1, deepstack_visual_indexes=(0,), attention_impl=impl))
  return init_random(cfg, seed=seed)


@pytest.mark.slow
def test_model_long_prompt_blocks_equal_one_block(monkeypatch):
  """The decoder hands its causal mask to the blocked path: a 150-token prompt's logits, in blocks of 32 (the
  last one short) and in one block, through the prefill into a cache as the sampler runs it and through
  the forward."""
  from taskmem_jax.models.qwen3_vl import prepare_inputs
  from taskmem_jax.sampling import sampler

  model = _small()
  ids = np.random.default_rng(0).integers(10, 200, (1, 150)).astype(np.int32)
  inputs = prepare_inputs(model.config, ids)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def run(params):
    m = nnx.merge(graphdef, params, rest)
    return sampler.prefill(m, inputs, 160, 1)[0], m.forward(inputs)

  runs = []
  for block in (32, 10_000):
    monkeypatch.setattr(layers, "ATTENTION_BLOCK", block)
    # a new function each time, so it is traced again and reads the block size (jit caches traces per function)
    runs.append(_jit(lambda p: run(p))(params))
  _close(runs[0][0], runs[1][0], 1e-5)
  _close(runs[0][1], runs[1][1], 1e-5)


# --- the whole model ------------------------------------------------------------------------------

def _tiny_batch(cfg):
  """Two rows, the first left-padded; a 2x4-patch image (2 merged tokens) in row 0 and a 4x4-patch one
  (4 tokens) in row 1, so the vision tower's per-frame attention has padding keys (8 of 16 slots)."""
  from taskmem_jax.models.qwen3_vl import prepare_inputs
  image = lambda n: [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id]
  rows = [[0, 0, 0] + image(2) + [7, 8, 9, 10, 11, 12], [5, 6] + image(4) + [20, 21, 22, 23, 24]]
  ids = np.array(rows, np.int32)
  mask = np.array([[0] * 3 + [1] * 10, [1] * 13], np.int32)
  pixels = np.random.default_rng(0).normal(size=(8 + 16, cfg.vision.patch_dim)).astype(np.float32)
  return prepare_inputs(cfg, ids, mask, pixels, np.array([[1, 2, 4], [1, 4, 4]])), mask


def _logits_and_grads(model, inputs, valid):
  """Logits [B, L, V] and parameter gradients of a fixed weighting of the logits at the real positions.
  Left-padding rows see no key on the pallas path (zeros) and uniform keys on the XLA path; nothing at a real
  position reads them, so only the real positions count."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params):
    logits = nnx.merge(graphdef, params, rest).forward(inputs)
    return jnp.where(valid[..., None], logits * jnp.cos(jnp.arange(logits.shape[-1])), 0.0).sum(), logits
  (_, logits), grads = _jit(jax.value_and_grad(loss, has_aux=True))(params)
  return logits, grads


@pytest.fixture(scope="module")
def xla_model():
  """The one-layer model on the XLA path, the tiny batch, and its logits and gradients: the reference of the
  pallas and remat tests."""
  model = _small("xla")
  inputs, mask = _tiny_batch(model.config)
  valid = jnp.asarray(mask, bool)
  return model, inputs, valid, _logits_and_grads(model, inputs, valid)


@pytest.mark.slow
def test_model_logits_and_grads_pallas_equal_xla(xla_model):
  _, inputs, valid, (logits_x, grads_x) = xla_model
  logits_p, grads_p = _logits_and_grads(_small("pallas"), inputs, valid)
  _close(jnp.where(valid[..., None], logits_p, 0), jnp.where(valid[..., None], logits_x, 0), 1e-5)
  flat_x, flat_p = jax.tree.leaves(grads_x), jax.tree.leaves(grads_p)
  assert len(flat_x) == len(flat_p)
  for gx, gp in zip(flat_x, flat_p):
    _close(gp, gx, 1e-4)
  assert any(np.abs(np.asarray(g)).max() > 0 for g in flat_x)


@pytest.mark.slow
def test_greedy_generate_pallas_equals_xla():
  """The sampler's prefill into the cache (flash attention at a slot offset) and its while-loop decode
  steps (decode attention, per-row length = the traced cache slot + 1) give the XLA path's tokens."""
  from taskmem_jax.sampling.sampler import generate
  ids = np.array([[0, 0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26, 27]], np.int64)
  batch = {"input_ids": ids, "attention_mask": (np.arange(7)[None] >= np.array([[3], [0]])).astype(np.int64)}
  outs = {}
  for impl in ("xla", "pallas"):
    outs[impl] = generate(_small(impl, seed=1), batch, max_new_tokens=4, min_bucket=16)
  np.testing.assert_array_equal(np.asarray(outs["pallas"].tokens), np.asarray(outs["xla"].tokens))
  _close(outs["pallas"].logprobs, outs["xla"].logprobs, 1e-5)


# (what, b, l, s, hq, hkv, d): 30B-A3B's text attention (GQA 8, D 128) and vision attention (D 72)
LOWERING_CASES = [("flash-gpu", 1, 256, 256, 32, 4, 128), ("flash-gpu", 2, 100, 100, 16, 16, 72),
                  ("decode-gpu", 2, 1, 1000, 32, 4, 128), ("decode-gpu", 1, 1, 300, 4, 4, 64),
                  ("flash-tpu", 1, 512, 512, 32, 4, 128), ("flash-tpu", 2, 200, 200, 16, 16, 72)]


@pytest.mark.parametrize("what,b,l,s,hq,hkv,d", LOWERING_CASES)
def test_kernels_lower_for_gpu_and_tpu(what, b, l, s, hq, hkv, d):
  """Without an accelerator, lower the compiled (non-interpret) kernels for CUDA / TPU: Pallas's Triton
  and Mosaic lowerings run on the host and reject what the hardware cannot take (Triton: tiles that are
  not powers of two; Mosaic: blocks off the 8 x 128 tiling; unsupported ops or indexing). Catches
  lowering bugs, not the device compilers' (PTX, Mosaic's layout passes) or speed."""
  from jax import export
  bf16 = jnp.bfloat16
  platform, target = ("tpu", "tpu_custom_call") if what.endswith("tpu") else ("cuda", "__gpu$xla.gpu.triton")
  no_check = [export.DisabledSafetyCheck.custom_call(target)]
  if what.startswith("flash"):
    def fn(q, k, v):
      f = lambda q, k, v: flash_attention(q, k, v, causal=hkv < hq, impl="pallas", interpret=False,
                                          backend=what[-3:]).astype(jnp.float32).sum()
      return jax.value_and_grad(f, argnums=(0, 1, 2))(q, k, v)
    q = jax.ShapeDtypeStruct((b, l, hq, d), bf16)
  else:
    fn = lambda q, k, v: decode_attention(q, k, v, jnp.full((b,), s - 7), impl="pallas", interpret=False)
    q = jax.ShapeDtypeStruct((b, hq, d), bf16)
  kv = jax.ShapeDtypeStruct((b, s, hkv, d), bf16)
  exported = export.export(jax.jit(fn), platforms=(platform,), disabled_checks=no_check)(q, kv, kv)
  assert target in exported.mlir_module()


def test_attention_impl_in_configs():
  """attention_impl: default "auto" (xla on CPU), read from an HF config.json's text/vision sections,
  not written back (a runtime choice), and a bad value is a ConfigError naming the field."""
  from taskmem_jax.models.qwen3_vl import ConfigError, Qwen3VLConfig, preset
  cfg = preset("tiny")
  assert cfg.text.attention_impl == cfg.vision.attention_impl == "auto"
  assert layers.resolve_attention_impl("auto") == ("xla" if jax.default_backend() == "cpu" else "pallas")
  hf = cfg.to_hf_dict()
  assert "attention_impl" not in hf["text_config"] and "attention_impl" not in hf["vision_config"]
  hf["text_config"]["attention_impl"] = "pallas"
  hf["vision_config"]["attention_impl"] = "xla"
  loaded = Qwen3VLConfig.from_hf_dict(hf)
  assert (loaded.text.attention_impl, loaded.vision.attention_impl) == ("pallas", "xla")
  hf["text_config"]["attention_impl"] = "flash"
  with pytest.raises(ConfigError, match="text_config.attention_impl"):
    Qwen3VLConfig.from_hf_dict(hf)


@pytest.mark.slow
def test_moe_dispatch_in_token_blocks_equals_one_dispatch(monkeypatch):
  """moe.chunked_dispatch (long prompts: blocks of MOE_CHUNK tokens, each recomputed in the backward) gives
  moe.dispatch's values and gradients; 50 tokens in blocks of 16 (the last one padded)."""
  from taskmem_jax.models.qwen3_vl import moe
  monkeypatch.setattr(moe, "MOE_CHUNK", 16)
  rng = np.random.default_rng(7)
  t, h, e, i, k = 50, 8, 6, 4, 2
  x = _normal(rng, (t, h))
  weights, experts = moe.route(_normal(rng, (t, e)), k)
  gate_up, down = _normal(rng, (e, h, 2 * i)), _normal(rng, (e, i, h))

  def out_and_grads(fn):  # the output and the gradients of (output * cos).sum(), in one program
    def run(x, gu, dn):
      out, vjp = jax.vjp(lambda x, gu, dn: fn(x, weights, experts, gu, dn), x, gu, dn)
      return out, vjp(jnp.broadcast_to(jnp.cos(jnp.arange(h)), out.shape))
    return _jit(run)(x, gate_up, down)

  got, want = out_and_grads(moe.chunked_dispatch), out_and_grads(moe.dispatch)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _close(a, b, 1e-5)


@pytest.mark.slow
def test_remat_gives_the_same_logits_and_grads(xla_model, tmp_path):
  """TextConfig.remat / VisionConfig.remat (jax.checkpoint around each decoder layer and vision block) changes
  memory, not values: under each policy, logits and gradients equal the un-rematerialised model's. The
  runtime override of from_pretrained sets it, and a bad value is named."""
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.models.qwen3_vl.config import ConfigError
  plain, inputs, valid, (logits_a, grads_a) = xla_model
  qwen3_vl.save_pretrained(plain, str(tmp_path))
  grads_a = jax.tree.leaves(grads_a)
  for policy in ("full", "dots"):
    remat = qwen3_vl.from_pretrained(str(tmp_path), dtype=jnp.float32, remat=policy)
    assert remat.config.text.remat == remat.config.vision.remat == policy
    logits_b, grads_b = _logits_and_grads(remat, inputs, valid)
    grads_b = jax.tree.leaves(grads_b)
    _close(logits_b, logits_a, 1e-6)
    assert len(grads_a) == len(grads_b)
    for a, b in zip(grads_a, grads_b):
      _close(b, a, 1e-5)
  with pytest.raises(ConfigError, match="text_config.remat='everything'"):
    qwen3_vl.from_pretrained(str(tmp_path), remat="everything")
