"""The memory plan against the compiler (tiny models, 1 device) and the 30B-A3B arithmetic."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from taskmem_jax import plan as plan_lib
from taskmem_jax import sharding
from taskmem_jax.models import qwen3_vl
from taskmem_jax.models.qwen3_vl.params import abstract_model
from taskmem_jax.training.loss import masked_cross_entropy


@pytest.mark.parametrize("name,rows,length", [("tiny", 2, 64), ("tiny", 4, 256), ("tiny-moe", 4, 256)])
def test_plan_matches_compiler(name, rows, length):
  cfg = qwen3_vl.preset(name)
  graphdef, state = abstract_model(cfg, jnp.float32)
  inputs = qwen3_vl.prepare_inputs(cfg, np.ones((rows, length), np.int32))

  def loss(params, inputs):
    logits = nnx.merge(graphdef, params).forward(inputs)
    return masked_cross_entropy(logits, inputs.input_ids, jnp.ones_like(inputs.input_ids))[0]

  memory = jax.jit(jax.grad(loss), keep_unused=True).lower(state, inputs).compile().memory_analysis()
  params = plan_lib.param_bytes_per_device(plan_lib.param_leaves(cfg), "single", plan_lib.mesh_shape("single", 1), 4)
  input_bytes = sum(np.asarray(x).nbytes for x in inputs if x is not None)
  assert memory.argument_size_in_bytes == params + input_bytes
  estimate = plan_lib.activation_bytes(cfg, rows, length, remat=False, bytes_per=4, flash=False)
  assert 1.0 <= memory.temp_size_in_bytes / estimate <= 3.0, (memory.temp_size_in_bytes, estimate)


def test_mesh_shape_matches_make_mesh():
  for preset in sharding.PRESETS:
    mesh = sharding.make_mesh(preset, jax.devices()[:1])
    assert plan_lib.mesh_shape(preset, 1) == dict(mesh.shape)
  assert plan_lib.mesh_shape("fsdp_tensor", 16) == {"data": 1, "fsdp": 4, "expert": 1, "tensor": 4}
  assert plan_lib.mesh_shape("expert", 8) == {"data": 1, "fsdp": 1, "expert": 8, "tensor": 1}


@pytest.mark.slow
def test_30b_a3b_numbers():
  cfg = qwen3_vl.preset("30B-A3B")
  total = qwen3_vl.count_params(cfg)["total"]
  assert abs(total - 31.07e9) < 0.01e9
  leaves = plan_lib.param_leaves(cfg)
  for preset in ("fsdp", "fsdp_tensor", "expert"):
    per_device = plan_lib.param_bytes_per_device(leaves, preset, plan_lib.mesh_shape(preset, 8))
    # everything but the (replicated) norm weights splits 8 ways
    assert total * 2 / 8 <= per_device <= total * 2 / 8 * 1.001, (preset, per_device)
  result = plan_lib.plan(cfg, devices=8, sharding="fsdp", batch=8, seq=4096, remat=True)
  one, two = result.rows
  assert one.params == two.params - 2048 * 2  # Phase Two adds the one steer vector (replicated)
  assert one.grads == one.params and one.optimizer == one.params * 2  # two bf16 moments (optax.adamw)
  assert two.grads == 2048 * 2 and two.optimizer == 2048 * 4
  t = cfg.text  # 1 row per device, 4096 tokens, 48 layers, k and v, 4 kv heads x 128, bf16
  assert one.kv_cache == 1 * 4096 * 48 * 2 * t.num_key_value_heads * t.head_dim * 2
  tp = plan_lib.plan(cfg, devices=16, sharding="fsdp_tensor", batch=8, seq=4096)
  assert tp.rows[0].kv_cache == 2 * 4096 * 48 * 2 * 1 * 128 * 2  # fsdp=4 -> 2 rows, tensor=4 -> 1 kv head
  no_remat = plan_lib.plan(cfg, devices=8, sharding="fsdp", batch=8, seq=4096, remat=False)
  assert no_remat.rows[0].activations > one.activations > 0
  assert two.activations < one.activations  # backward only from the steered layer 22 up
  assert "Phase One" in plan_lib.format_table(result)


def test_vision_plan_matches_compiler():
  """The tower's backward working set on the tiny model: one row, a 2-group 8x8 video (128 patches, 32
  merged tokens, per-frame attention over 64 patches), fp32, no flash, against XLA's temp bytes."""
  cfg = qwen3_vl.preset("tiny")
  model = qwen3_vl.init_random(cfg, seed=0, dtype=jnp.float32)
  graphdef, params = nnx.split(model.visual)
  grid = np.array([[2, 8, 8]])
  meta = qwen3_vl.vision_metadata(grid, cfg.vision)
  pixels = jnp.ones((128, cfg.vision.patch_dim), jnp.float32)

  def loss(params):
    features, deepstack = nnx.merge(graphdef, params)(pixels, meta)
    return jnp.sum(features**2) + sum(jnp.sum(d**2) for d in deepstack)

  memory = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis()
  estimate = plan_lib.vision_activation_bytes(cfg, 1, 32, remat=False, bytes_per=4, flash=False, frame_patches=64)
  assert 1.0 <= memory.temp_size_in_bytes / estimate <= 3.0, (memory.temp_size_in_bytes, estimate)


def test_tensor_parallel_splits_heads_not_experts():
  cfg = qwen3_vl.preset("30B-A3B")
  t, b, n = cfg.text, 2, 4096
  whole = plan_lib.layer_activation_bytes(cfg, b, n, 0, tensor=1)
  split = plan_lib.layer_activation_bytes(cfg, b, n, 0, tensor=4)
  # By hand: 32 q heads and 4 kv heads of 128 split 4 ways; H = 2048 not; nor the MoE buffers (its experts are
  # split over "tensor", each device's dispatch holding every routed copy of its tokens). 8,192 tokens = one
  # MoE block, so the layer keeps its routed copies.
  q, kv, k, i = 8 * 128, 1 * 128, t.num_experts_per_tok, 768
  attn = b * n * 2 * (2 * 2048 + 3 * q + 4 * kv) + b * 8 * n * 4
  mlp = b * n * 2 * (2048 + 2 * k * 2048 + 3 * k * i) + b * n * t.num_experts * 4
  assert t.is_moe_layer(0) and split == attn + mlp < whole
  # Kv heads that do not divide stay whole (spec_for leaves the axis unsplit).
  assert plan_lib._split(4, 8) == 4 and plan_lib._split(32, 8) == 4
  # fsdp_tensor on 16 devices: fsdp 4 (2 of the 8 rows a device), tensor 4.
  tp = plan_lib.plan(cfg, devices=16, sharding="fsdp_tensor", batch=8, seq=4096, vision_tokens=1000)
  assert tp.mesh_axes["tensor"] == 4 and tp.settings["rows_per_device"] == 2
  text = plan_lib.activation_bytes(cfg, 2, 4096, remat=True, tensor=4, logit_chunk=1024)
  assert text < plan_lib.activation_bytes(cfg, 2, 4096, remat=True, tensor=1, logit_chunk=1024)
  vision = plan_lib.vision_activation_bytes(cfg, 2, 1000, remat=True, tensor=4)
  assert 0 < vision < plan_lib.vision_activation_bytes(cfg, 2, 1000, remat=True)
  assert tp.rows[0].activations == text + vision == text + tp.settings["vision_activations"]
  assert tp.rows[1].activations == plan_lib.activation_bytes(cfg, 2, 4096, remat=True, tensor=4,
                                                             first_layer=tp.settings["first_steer_layer"],
                                                             logit_chunk=1024, weight_grads=False)
  assert "vision tokens/row" in plan_lib.format_table(tp)
  with pytest.raises(ValueError, match="vision_tokens=5000"):
    plan_lib.plan(cfg, devices=8, seq=4096, vision_tokens=5000)


def test_processes_plan_one_copy_per_process():
  """16 devices on 4 hosts: Phase One / Two are data parallel over hosts, so each device holds what a
  4-device copy on a quarter of the rows holds, except the AdamW moments, split over all 16 (ZeRO-1);
  the v5p-32 target counts 4 hosts."""
  config = qwen3_vl.preset("30B-A3B")
  kw = dict(sharding="fsdp", seq=2048, vision_tokens=512)
  hosts = plan_lib.plan(config, devices=16, batch=16, processes=4, **kw)
  one_host = plan_lib.plan(config, devices=4, batch=4, **kw)
  whole = plan_lib.plan(config, devices=16, batch=16, **kw)
  for a, b in zip(hosts.rows, one_host.rows):
    assert dataclasses.replace(a, optimizer=0) == dataclasses.replace(b, optimizer=0)
  assert hosts.rows[0].optimizer == whole.rows[0].optimizer  # moments over all 16 devices
  assert hosts.rows[1].optimizer == one_host.rows[1].optimizer  # Phase Two: the replicated steer's
  assert hosts.rows[0].params > 3.5 * whole.rows[0].params  # a copy over 4 devices, not 16
  assert hosts.settings["batch"] == 16 and hosts.settings["rows_per_device"] == 1  # 4 rows over 4 devices
  assert "4 processes x 4" in plan_lib.format_table(hosts)
  devices, _, per_host = plan_lib.target("tpu-v5p-32")
  assert devices // per_host == 4
  with pytest.raises(ValueError, match="processes=3 must divide devices=16"):
    plan_lib.plan(config, devices=16, processes=3)
  with pytest.raises(ValueError, match="batch=6"):
    plan_lib.plan(config, devices=16, batch=6, processes=4)


def test_blocked_moe_and_head_and_remat_terms():
  """The implementation's block sizes, restated in the plan, are the implementation's; past MOE_CHUNK tokens a
  MoE layer keeps its input and router only and one block's copies are transient; the head in LOGIT_CHUNK
  blocks; remat keeps REMAT_KEPT_HIDDEN / _HEADS per layer with weight gradients, REMAT_KEPT_FROZEN x H without."""
  from taskmem_jax.models.qwen3_vl import moe
  from taskmem_jax.rl import step
  assert plan_lib.MOE_CHUNK == moe.MOE_CHUNK and plan_lib.LOGIT_CHUNK == step.LOGIT_CHUNK
  cfg = qwen3_vl.preset("30B-A3B")
  t, n = cfg.text, 24576
  attn = n * 2 * (2 * 2048 + 3 * 4096 + 4 * 512) + 32 * n * 4
  assert plan_lib.layer_activation_bytes(cfg, 1, n, 0) == attn + n * 2 * 2048 * 2 + n * 128 * 4
  block = 8192 * (8 * (2048 * 2 + 2 * 768 * 4 + 768 * 2 + 2048 * 4) + 2048 * 2)
  assert plan_lib.layer_working_bytes(cfg, 1, n, 0) == plan_lib.layer_activation_bytes(cfg, 1, n, 0) + block
  head = n * t.vocab_size * 6
  full = plan_lib.activation_bytes(cfg, 1, n, remat=True)
  assert full - plan_lib.activation_bytes(cfg, 1, n, remat=True, logit_chunk=1024) == head - 1024 * t.vocab_size * 6
  kept = int(48 * n * 2 * (plan_lib.REMAT_KEPT_HIDDEN * 2048 + plan_lib.REMAT_KEPT_HEADS * 4096))
  assert full == kept + plan_lib.layer_working_bytes(cfg, 1, n, 0) + head
  frozen = plan_lib.activation_bytes(cfg, 1, n, remat=True, first_layer=22, weight_grads=False)
  assert frozen == int(26 * n * 2 * plan_lib.REMAT_KEPT_FROZEN * 2048) + plan_lib.layer_working_bytes(cfg, 1, n, 22) + head
