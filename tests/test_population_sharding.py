"""The population and FSDP axes: on 4 forced host devices, a (data 2, fsdp 2) mesh spreads the
members and splits each member's parameters, and the vmapped AdamW update equals the unsharded one."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from taskmem_jax.rl import population as pop
    from taskmem_jax.training.optim import TrainState
    assert jax.device_count() == 4, jax.devices()
    mesh = pop.make_mesh(2, {"fsdp": 2})  # the older {"fsdp": k} form: preset fsdp over k devices per member
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "expert": 1, "tensor": 1}
    assert pop.make_mesh(3, {"fsdp": 1}) is None  # 3 members do not spread evenly over 4 devices
    assert dict(pop.make_mesh(1, {"fsdp": -1}).shape) == {"data": 1, "fsdp": 4, "expert": 1, "tensor": 1}
    assert dict(pop.make_mesh(1, {"preset": "fsdp_tensor"}).shape) == {"data": 1, "fsdp": 2, "expert": 1, "tensor": 2}
    assert dict(pop.make_mesh(2, {"preset": "expert", "fsdp": 2}).shape) == {"data": 2, "fsdp": 1, "expert": 2,
                                                                           "tensor": 1}
    opt = optax.adamw(1e-2)
    # sharding.py's rules by path: lm_head.kernel is (embed, vocab), embed over "fsdp"; norms replicated
    params = [{"lm_head": {"kernel": jnp.full((4, 3), float(k))}, "language_model": {"norm": {"weight": jnp.arange(3.0) * k}}}
              for k in (1, 2)]
    state = pop.stack([TrainState(jnp.zeros((), jnp.int32), p, opt.init(p)) for p in params])
    grads = pop.stack([{"lm_head": {"kernel": jnp.ones((4, 3)) * k}, "language_model": {"norm": {"weight": -jnp.ones(3) * k}}}
                       for k in (1, 2)])
    apply = pop.make_apply(opt)
    plain, norm_plain = apply(jax.tree.map(jnp.copy, state), grads, 2.0)
    sharded_state = pop.shard(state, pop.state_sharding(state, mesh))
    w, b = sharded_state.params["lm_head"]["kernel"], sharded_state.params["language_model"]["norm"]["weight"]
    assert len(w.sharding.device_set) == 4
    assert w.addressable_shards[0].data.shape == (1, 2, 3)  # member 1 of 2, embed rows 2 of 4
    assert b.addressable_shards[0].data.shape == (1, 3)     # a norm: replicated within the member
    mu = sharded_state.opt_state[0].mu["lm_head"]["kernel"]
    assert mu.sharding == w.sharding                        # Adam's moments as their parameter
    sharded, norm_sharded = apply(sharded_state, pop.shard(grads, pop.state_sharding(grads, mesh)), 2.0)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(sharded)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    np.testing.assert_allclose(norm_plain, norm_sharded, rtol=1e-6)
    print("ok")
""")


def test_population_and_fsdp_mesh_on_four_devices():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": ROOT}
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith("ok")


# Phase One's whole step under a mesh (fsdp and fsdp_tensor on 8 devices) equals one device:
# tests/test_mesh_steps.py.
