"""Logical sharding (taskmem_jax/sharding.py) and sharded loading (params.from_pretrained(mesh=...)).

Main process: every parameter of tiny and tiny-moe has logical axes from its path, unknown paths raise
naming the path. Subprocess on 8 forced host devices: for fsdp, fsdp_tensor (tiny) and expert (tiny-moe),
a saved tiny checkpoint loads into the expected shardings, each device holds only its slice, and the
logits equal the single-device model's.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from flax import nnx, traverse_util

from taskmem_jax import sharding
from taskmem_jax.models.qwen3_vl import params
from taskmem_jax.models.qwen3_vl.config import preset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_every_parameter_has_logical_axes(name):
  _, state = params.abstract_model(preset(name), jnp.float32)
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
  for path, leaf in flat.items():
    axes = sharding.logical_axes(path, leaf.shape)
    assert len(axes) == leaf.ndim and set(axes) <= sharding.LOGICAL_AXES, (path, axes)
  kinds = {sharding.logical_axes(p, v.shape) for p, v in flat.items()}
  assert (("experts", "embed", "expert_mlp") in kinds) == (name == "tiny-moe")
  # The State form (Variables) gives the same paths; a single-device mesh replicates everything.
  mesh = sharding.make_mesh("single")
  shardings = sharding.param_shardings(state, mesh, "fsdp_tensor")
  leaves = jax.tree.leaves(shardings)
  assert len(leaves) == len(flat) and all(isinstance(s, NamedSharding) and s.spec == P() for s in leaves)


def test_unknown_path_and_rank_raise_naming_the_path():
  with pytest.raises(ValueError, match="language_model.layers.0.mlp.extra_proj.kernel"):
    sharding.logical_axes(("language_model", "layers", 0, "mlp", "extra_proj", "kernel"), (4, 4))
  with pytest.raises(ValueError, match=r"lm_head.kernel.*rank 3"):
    sharding.logical_axes(("lm_head", "kernel"), (4, 4, 4))
  with pytest.raises(ValueError, match="unknown"):
    sharding.make_mesh("zero3")
  with pytest.raises(ValueError, match="unknown logical axes"):
    sharding.spec_for(("embed",), (8,), sharding.make_mesh("single"), {"hidden": "fsdp"})


SCRIPT = textwrap.dedent("""
    import sys, time
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from flax import nnx, traverse_util
    from taskmem_jax import sharding
    from taskmem_jax.models import qwen3_vl
    from taskmem_jax.models.qwen3_vl import params
    from taskmem_jax.models.qwen3_vl.config import preset
    assert jax.device_count() == 8, jax.devices()
    tmp = sys.argv[1]
    t0 = time.time()

    shapes = {p: dict(sharding.make_mesh(p).shape) for p in sharding.PRESETS}
    assert shapes == {"single": dict(data=1, fsdp=1, expert=1, tensor=1), "fsdp": dict(data=1, fsdp=8, expert=1, tensor=1),
                      "fsdp_tensor": dict(data=1, fsdp=4, expert=1, tensor=2),
                      "expert": dict(data=1, fsdp=1, expert=8, tensor=1)}, shapes
    # Fallback: on 6 devices the vision width 64 does not split in 6, so it stays replicated.
    mesh6 = sharding.make_mesh("fsdp", jax.devices()[:6])
    assert sharding.param_sharding(("visual", "blocks", 0, "mlp", "linear_fc1", "kernel"), (64, 128), mesh6,
                                   "fsdp").spec == P()
    assert sharding.param_sharding(("lm_head", "kernel"), (96, 256), mesh6, "fsdp").spec == P("fsdp")
    act = sharding.activation_sharding(sharding.make_mesh("expert"), "expert")
    assert act.spec == P("expert"), act.spec

    # Two rows, each with one 4x4-patch image (4 merged tokens), so the vision tower's sharding is run too.
    rng = np.random.default_rng(0)
    text = rng.integers(0, 250, size=(2, 10))
    ids = np.concatenate([text[:, :4], np.full((2, 1), 252), np.full((2, 4), 250), np.full((2, 1), 253),
                          text[:, 4:]], axis=1).astype(np.int32)
    pixels = rng.standard_normal((32, 1536)).astype(np.float32)
    grids = np.array([[1, 4, 4], [1, 4, 4]])
    run = lambda m: np.asarray(m(ids, pixel_values=pixels, image_grid_thw=grids))
    CHECKS = {  # preset: (config, {path: expected spec})
        "fsdp": ("tiny", {
            ("language_model", "embed_tokens", "weight"): P(None, "fsdp"),
            ("language_model", "layers", "0", "mlp", "gate_proj", "kernel"): P("fsdp"),
            ("lm_head", "kernel"): P("fsdp"),
            ("language_model", "norm", "weight"): P()}),
        "fsdp_tensor": ("tiny", {
            ("language_model", "embed_tokens", "weight"): P("tensor", "fsdp"),
            ("language_model", "layers", "1", "mlp", "gate_proj", "kernel"): P("fsdp", "tensor"),
            ("language_model", "layers", "1", "mlp", "down_proj", "kernel"): P("tensor", "fsdp"),
            ("language_model", "layers", "0", "self_attn", "k_proj", "kernel"): P("fsdp", "tensor"),
            ("visual", "blocks", "0", "attn", "qkv", "kernel"): P("fsdp", "tensor")}),
        "expert": ("tiny-moe", {
            ("language_model", "layers", "0", "mlp", "experts", "gate_up_proj"): P("expert"),
            ("language_model", "layers", "0", "mlp", "experts", "down_proj"): P("expert"),
            ("language_model", "layers", "3", "mlp", "gate_proj", "kernel"): P("expert"),  # dense layer
            ("language_model", "embed_tokens", "weight"): P(None, "expert")}),
    }
    saved, saved_shapes = {}, {}
    for name in ("tiny", "tiny-moe"):
      path = f"{tmp}/{name}"
      qwen3_vl.save_pretrained(params.init_random(preset(name), seed=1), path)
      ref = params.from_pretrained(path, dtype=jnp.float32)
      saved[name] = (path, run(ref))
      saved_shapes[name] = {tuple(map(str, k)): v.shape
                            for k, v in traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(ref))).items()}
    # Record what each read returns: a split tensor is read slice by slice, never whole.
    reads, read_slice = {}, params._read_slice
    def recording(f, spec, found, index, dtype):
      out = read_slice(f, spec, found, index, dtype)
      reads.setdefault(spec.hf_key, []).append(out.shape)
      return out
    params._read_slice = recording
    for p, (name, expected) in CHECKS.items():
      path, ref_logits = saved[name]
      mesh = sharding.make_mesh(p)
      reads.clear()
      model = params.from_pretrained(path, dtype=jnp.float32, mesh=mesh, preset=p)
      hf_keys = {tuple(map(str, s.path)): k for k, s in params.param_table(model.config, nnx.state(model)).items()}
      for key, spec in expected.items():
        if spec != P():  # (a transposed HF layout is read transposed, so compare sizes)
          full = int(np.prod(saved_shapes[name][key]))
          assert all(int(np.prod(r)) < full for r in reads[hf_keys[key]]), (p, key, reads[hf_keys[key]])
      flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model)))
      flat = {tuple(str(k) for k in key): v for key, v in flat.items()}
      for key, spec in expected.items():
        assert flat[key].sharding.spec == spec, (p, key, flat[key].sharding.spec, spec)
      split = 0
      for key, leaf in flat.items():
        want = sharding.param_sharding(key, leaf.shape, mesh, p)
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim), (p, key)
        shard = leaf.addressable_shards[0].data
        if any(a is not None for a in want.spec):
          assert shard.size < leaf.size, (p, key, shard.shape)
          split += 1
        else:
          assert shard.shape == leaf.shape, (p, key)
      assert split > len(flat) // 3, (p, split, len(flat))
      logits = run(model)
      err = np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()
      assert err < 1e-5, (p, err)
      print(p, "split", split, "of", len(flat), "err", err)
    # The Hub expert layout [E, in, out] (not transposed in the file), sliced on two dimensions, in bf16.
    import shutil, safetensors.numpy
    hub = f"{tmp}/hub"
    shutil.copytree(saved["tiny-moe"][0], hub)
    tensors = safetensors.numpy.load_file(f"{hub}/model.safetensors")
    tensors = {k: v.swapaxes(1, 2).copy() if k.endswith(("experts.gate_up_proj", "experts.down_proj")) else v
               for k, v in tensors.items()}
    safetensors.numpy.save_file(tensors, f"{hub}/model.safetensors", metadata={"format": "pt"})
    plain = params.from_pretrained(saved["tiny-moe"][0], dtype=jnp.bfloat16)
    model = params.from_pretrained(hub, dtype=jnp.bfloat16, mesh=sharding.make_mesh("fsdp_tensor"), preset="fsdp_tensor")
    gate_up = model.language_model.layers[0].mlp.experts.gate_up_proj
    assert gate_up.sharding.spec == P("tensor", "fsdp") and gate_up.dtype == jnp.bfloat16, gate_up.sharding
    for a, b in zip(jax.tree.leaves(nnx.state(plain)), jax.tree.leaves(nnx.state(model))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    print("seconds", round(time.time() - t0, 1))
    print("ok")
""")


@pytest.mark.slow
def test_sharded_loading_on_eight_devices(tmp_path):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": ROOT}
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith("ok"), out.stdout
