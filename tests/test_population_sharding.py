"""The population axis sharded over devices: on 2 forced host devices, the vmapped AdamW update of a
sharded population equals the unsharded one, and each device holds one member."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from taskmem_jax.rl import population as pop
    from taskmem_jax.training.sft import TrainState
    assert jax.device_count() == 2, jax.devices()
    sharding = pop.population_sharding(2)
    assert sharding is not None and pop.population_sharding(3) is None
    opt = optax.adamw(1e-2)
    params = [{"w": jnp.full((4, 3), float(k)), "b": jnp.arange(3.0) * k} for k in (1, 2)]
    state = pop.stack([TrainState(jnp.zeros((), jnp.int32), p, opt.init(p)) for p in params])
    grads = pop.stack([{"w": jnp.ones((4, 3)) * k, "b": -jnp.ones(3) * k} for k in (1, 2)])
    apply = pop.make_apply(opt)
    plain, norm_plain = apply(jax.tree.map(jnp.copy, state), grads, 2.0)
    sharded_state = pop.shard(state, sharding)
    assert len(sharded_state.params["w"].sharding.device_set) == 2
    assert sharded_state.params["w"].addressable_shards[0].data.shape == (1, 4, 3)
    sharded, norm_sharded = apply(sharded_state, pop.shard(grads, sharding), 2.0)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(sharded)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    np.testing.assert_allclose(norm_plain, norm_sharded, rtol=1e-6)
    print("ok")
""")


def test_population_sharded_over_two_devices():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": ROOT}
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith("ok")
