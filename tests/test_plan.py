"""The memory plan against the compiler (tiny models, 1 device) and the 30B-A3B arithmetic."""

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
  assert one.grads == one.params and one.optimizer == one.params * 4
  assert two.grads == 2048 * 2 and two.optimizer == 2048 * 8
  t = cfg.text  # 1 row per device, 4096 tokens, 48 layers, k and v, 4 kv heads x 128, bf16
  assert one.kv_cache == 1 * 4096 * 48 * 2 * t.num_key_value_heads * t.head_dim * 2
  tp = plan_lib.plan(cfg, devices=16, sharding="fsdp_tensor", batch=8, seq=4096)
  assert tp.rows[0].kv_cache == 2 * 4096 * 48 * 2 * 1 * 128 * 2  # fsdp=4 -> 2 rows, tensor=4 -> 1 kv head
  no_remat = plan_lib.plan(cfg, devices=8, sharding="fsdp", batch=8, seq=4096, remat=False)
  assert no_remat.rows[0].activations > one.activations > 0
  assert two.activations < one.activations  # backward only from the steered layer 22 up
  assert "Phase One" in plan_lib.format_table(result)
