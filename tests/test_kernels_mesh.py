"""The attention kernels under a mesh: on 8 forced CPU devices, the model with attention_impl="pallas"
(interpret mode) and "chunked", its weights laid out by each preset (fsdp, fsdp_tensor, expert on tiny-moe),
gives the one-device XLA path's logits and gradients, and greedy tokens through the sampler's prefill and
decode. The kernels run inside jax.shard_map (layers.kernel_attention reads the context mesh); the test
checks that the traced program holds the shard_map, so a silently unsharded call cannot pass.
One subprocess (the device count is fixed when JAX starts).

Compiling is nearly all of the time: the subprocesses compile with XLA's CPU backend at LLVM -O0 (FAST_FLAGS;
2-3x faster, the same programs with less optimised machine code), and the models have one decoder layer
(tiny-moe: a MoE and a dense one) and one vision block."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.multiprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_FLAGS = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"

SCRIPT = textwrap.dedent("""
    import dataclasses
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from taskmem_jax import sharding as shd
    from taskmem_jax.models.qwen3_vl import init_random, prepare_inputs, preset
    from taskmem_jax.sampling.sampler import generate
    assert jax.device_count() == 8, jax.devices()

    def config(name, impl):
      # One decoder layer (tiny-moe: two, a MoE one and a dense one as its last is) and one vision block with its
      # DeepStack tap: every kind of layer and attention call, at a fraction of the presets' compile time.
      cfg = preset(name)
      text = dict(num_hidden_layers=2, mlp_only_layers=(1,)) if cfg.text.is_moe else dict(num_hidden_layers=1)
      return cfg.replace(text=dataclasses.replace(cfg.text, attention_impl=impl, **text),
                         vision=dataclasses.replace(cfg.vision, attention_impl=impl, depth=1,
                                                    deepstack_visual_indexes=(0,)))

    def batch(cfg):
      # 8 rows (so every preset splits them), each an image of 2 x 4 patches (8 frames for the tower) and text.
      image = [cfg.vision_start_token_id] + [cfg.image_token_id] * 2 + [cfg.vision_end_token_id]
      ids = np.array([[5 + r, 6] + image + [20 + r, 21, 22, 23] for r in range(8)], np.int32)
      pixels = np.random.default_rng(0).normal(size=(8 * 8, cfg.vision.patch_dim)).astype(np.float32)
      return prepare_inputs(cfg, ids, None, pixels, np.tile([[1, 2, 4]], (8, 1)))

    def logits_and_grads(model, mesh):
      graphdef, params, rest = nnx.split(model, nnx.Param, ...)
      inputs = batch(model.config)
      def loss(params):
        logits = nnx.merge(graphdef, params, rest).forward(inputs)
        return (logits * jnp.cos(jnp.arange(logits.shape[-1]))).sum(), logits
      fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
      if mesh is None:
        (_, logits), grads = fn(params)
        return logits, grads, ""
      with jax.set_mesh(mesh):
        (_, logits), grads = fn(params)
        jaxpr = str(jax.make_jaxpr(loss)(params))
      return logits, grads, jaxpr

    def close(a, b, tol, what):
      a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
      err = np.abs(a - b).max() / max(1.0, np.abs(b).max())
      assert err < tol, (what, err)

    prompt = {"input_ids": np.array([[11 + r, 12, 13, 14, 15, 16] for r in range(8)]),
              "attention_mask": np.ones((8, 6), np.int64)}
    refs = {}  # per model: the one-device XLA model, its logits and grads, and its greedy tokens (computed once)
    for name, mesh_preset, impl in [("tiny", "fsdp", "pallas"), ("tiny", "fsdp_tensor", "pallas"),
                                    ("tiny-moe", "expert", "pallas"), ("tiny", "fsdp_tensor", "chunked")]:
      if name not in refs:
        ref = init_random(config(name, "xla"), seed=0)
        refs[name] = [ref, logits_and_grads(ref, None)[:2], None]
      ref, (logits_ref, grads_ref), want = refs[name]
      mesh = shd.make_mesh(mesh_preset)
      model = init_random(config(name, impl), seed=0)
      state = nnx.state(model)
      nnx.update(model, jax.device_put(state, shd.param_shardings(state, mesh, mesh_preset)))
      logits, grads, jaxpr = logits_and_grads(model, mesh)
      what = f"{name} {mesh_preset} {impl}"
      assert jaxpr.count("shard_map") >= 2, (what, "no shard_map: the kernels ran unsharded")
      close(logits, logits_ref, 1e-5, what + " logits")
      flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(grads_ref)
      assert len(flat) == len(flat_ref) and any(np.abs(np.asarray(g)).max() > 0 for g in flat_ref)
      for g, g_ref in zip(flat, flat_ref):
        close(g, g_ref, 1e-4, what + " grads")
      if impl == "pallas" and mesh_preset != "expert":  # prefill (flash at a slot offset) and decode (split-K)
        if want is None:
          want = refs[name][2] = generate(ref, prompt, max_new_tokens=3, min_bucket=16)
        got = generate(model, prompt, max_new_tokens=3, min_bucket=16)
        np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens), err_msg=what)
        close(got.logprobs, want.logprobs, 1e-4, what + " logprobs")
      print("ok", what, flush=True)
""")


def test_kernels_under_each_preset_equal_one_device_xla():
  env = dict(os.environ, XLA_FLAGS=FAST_FLAGS, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  assert proc.stdout.count("ok ") == 4, proc.stdout


MOE_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from taskmem_jax import sharding as shd
    from taskmem_jax.models.qwen3_vl import preset
    from taskmem_jax.models.qwen3_vl.moe import SparseMoeBlock
    assert jax.device_count() == 8, jax.devices()
    cfg = preset("tiny-moe").text
    block = SparseMoeBlock(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(block, nnx.Param)

    def loss(params, x):
      out = nnx.merge(graphdef, params)(x)
      return (out * jnp.sin(jnp.arange(out.size).reshape(out.shape))).sum(), out

    grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    for rows in (8, 3):  # 3: rows the batch axes do not divide (replicated tokens)
      x = jax.random.normal(jax.random.key(rows), (rows, 24, cfg.hidden_size))
      (_, want), want_grads = jax.jit(grad)(params, x)
      for mesh_preset, sizes in [("fsdp", {}), ("fsdp_tensor", {}), ("expert", {}), ("expert", {"expert": 4})]:
        mesh = shd.make_mesh(mesh_preset, **sizes)
        # the block's own paths are not the model's: its weights laid out by the preset's rules as in the model
        axes = {"kernel": ("embed", "router"), "gate_up_proj": ("experts", "embed", "expert_mlp"),
                "down_proj": ("experts", "expert_mlp", "embed")}
        layout = jax.tree_util.tree_map_with_path(lambda keys, leaf: jax.sharding.NamedSharding(
            mesh, shd.spec_for(axes[shd._path(keys)[-1]], leaf.shape, mesh, mesh_preset)), params)
        placed = jax.device_put(params, layout)
        with jax.set_mesh(mesh):
          xs = jax.device_put(x, shd.activation_sharding(mesh, mesh_preset, x.shape))
          (_, got), got_grads = jax.jit(grad)(placed, xs)
          jaxpr = str(jax.make_jaxpr(grad)(placed, xs))
        what = f"B={rows} {mesh_preset} {dict(mesh.shape)}"
        assert "shard_map" in jaxpr, what
        if mesh_preset == "fsdp":
          # whole experts gathered in the layer; their cotangents leave it reduce-scattered, not summed whole
          assert "reduce_scatter" in jaxpr, (what, "expert weight gradients are not reduce-scattered")
        else:  # expert parallel: each device picks its own experts' copies
          assert "axis_index" in jaxpr, (what, "the experts are not dispatched expert-parallel")
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5, err_msg=what)
        for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
          np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5, err_msg=what)
        print("ok", what, flush=True)
""")


def test_moe_block_under_each_preset_equals_one_device():
  """The MoE block under a mesh equals the unsharded block in values and gradients: under fsdp (each device
  its own rows, the whole experts gathered in the layer), fsdp_tensor (experts parallel over "tensor") and
  expert (8, and 4 x fsdp 2, expert-parallel devices), for a batch the mesh splits and one it cannot."""
  env = dict(os.environ, XLA_FLAGS=FAST_FLAGS, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", MOE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  assert proc.stdout.count("ok ") == 8, proc.stdout
