"""The SFT step, the Phase-One step, the DPO step and the rollout scan under a mesh: on 8 forced host
devices, each preset that splits a model's weights two ways (fsdp_tensor: the fsdp and tensor axes at once;
expert on tiny-moe) gives the losses, the parameter updates and the greedy rollout tokens of one device. The
fsdp preset alone runs in Phase Two here and in test_multihost (SFT, Phase One, over two processes). A few subprocesses, each running one or two cases, so that JAX
starts rarely and pytest-xdist can spread them. On CPU compiling is most of their time, so Phase Two keeps
to few window shapes.

Sharded reductions sum in another order, and Adam turns a near-zero gradient's rounding into a full step
for a few elements, so parameters are compared as updates (params - init): equal to 1e-3 of its norm.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.multiprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY = os.path.join(ROOT, "assets", "synthworld_policy")

SCRIPT = textwrap.dedent("""
    import functools, os, sys, time
    import jax, numpy as np
    from flax import nnx
    sys.path.insert(0, "tests")
    from taskmem_jax import sharding as shd
    from taskmem_jax.models import qwen3_vl
    from taskmem_jax.processing import Qwen3VLProcessor
    from experiments.describe import tiny_checkpoint
    assert jax.device_count() == 8, jax.devices()
    tmp = sys.argv[1]
    MOE = {"fsdp_tensor": "tiny", "expert": "tiny-moe"}
    MODELS = sys.argv[2].split(",")  # the SFT section's models: its runs are split over two tests
    times = {}

    def leaves(tree):
      return [np.asarray(x) for x in jax.tree.leaves(tree)]

    def same_update(init, a, b, what):
      da = np.concatenate([(x - i).ravel() for x, i in zip(a, init)])
      db = np.concatenate([(x - i).ravel() for x, i in zip(b, init)])
      assert np.linalg.norm(da) > 0, what
      assert np.linalg.norm(da - db) < 1e-3 * np.linalg.norm(da), (what, np.linalg.norm(da), np.linalg.norm(da - db))

    def spread(tree):
      return max(len(x.sharding.device_set) for x in jax.tree.leaves(tree))

    @functools.cache
    def tiny():
      # The tiny checkpoint and its processor, made when a section first needs them (Phase One and Two don't).
      ckpt = tiny_checkpoint(tmp)
      return ckpt, Qwen3VLProcessor.from_pretrained(ckpt)

    # --- SFT: 2 steps -------------------------------------------------------------------------
    tic = time.perf_counter()
    from helpers import sft_config, text_messages
    from taskmem_jax.training import example_from_messages, train
    ckpt, processor = tiny()
    words = ["red box left", "green cat sat", "blue ball rolls", "the sign shows four", "a person picks up",
             "the cup moves right", "yellow star top", "nothing changed here"]
    examples = [example_from_messages(processor, text_messages(w), "</think>\\n\\n" + w[::-1]) for w in words]
    sft = {}
    for name, preset in [(name, preset) for name, preset in [("tiny", None), ("tiny-moe", None), ("tiny", "fsdp_tensor"),
                                                             ("tiny-moe", "expert")]
                         if name in MODELS]:
      cfg = sft_config(f"{tmp}/sft_{name}_{preset}", steps=2, batch_size=8, warmup_steps=1, log_every=1)
      model = qwen3_vl.init_random(qwen3_vl.preset(name), seed=0)
      mesh = None if preset is None else shd.make_mesh(preset)
      out = train(cfg, model, examples, processor.pad_token_id, progress=False, mesh=mesh, preset=preset or "fsdp")
      params = nnx.state(out["model"], nnx.Param)
      if preset is not None:
        assert spread(params) == 8, preset
      sft[(name, preset)] = ([h["loss"] for h in out["history"]], leaves(params))
    for name in MODELS:
      init = leaves(nnx.state(qwen3_vl.init_random(qwen3_vl.preset(name), seed=0), nnx.Param))
      for preset in [p for p, m in MOE.items() if m == name]:
        np.testing.assert_allclose(sft[(name, preset)][0], sft[(name, None)][0], rtol=1e-5, err_msg=preset)
        same_update(init, sft[(name, None)][1], sft[(name, preset)][1], "sft " + preset)
    times["sft"] = time.perf_counter() - tic

    # --- DPO: 2 steps -------------------------------------------------------------------------
    tic = time.perf_counter()
    from helpers import dpo_config, dpo_pairs
    from taskmem_jax.adapters import steer as S
    from taskmem_jax.phase_two.dpo import train_steer
    dpo = {}
    for name, preset in [("tiny", None), ("tiny-moe", None), ("tiny", "fsdp_tensor"),
                         ("tiny-moe", "expert")]:
      model = S.add_steer(qwen3_vl.init_random(qwen3_vl.preset(name), seed=0), [2])
      mesh = None if preset is None else shd.make_mesh(preset)
      out = train_steer(dpo_config(2), model, dpo_pairs(model.config), pad_id=0, progress=False, mesh=mesh,
                        preset=preset or "fsdp")
      dpo[(name, preset)] = ([h["loss"] for h in out["history"]], S.get_steer(model))
    for name in ("tiny", "tiny-moe"):
      for preset in [p for p, m in MOE.items() if m == name]:
        np.testing.assert_allclose(dpo[(name, preset)][0], dpo[(name, None)][0], rtol=1e-5, err_msg=preset)
        same_update([np.zeros_like(dpo[(name, None)][1])], [dpo[(name, None)][1]], [dpo[(name, preset)][1]],
                    "dpo " + preset)
    times["dpo"] = time.perf_counter() - tic

    # --- the rollout scan: greedy tokens -------------------------------------------------------
    tic = time.perf_counter()
    from taskmem_jax.memory import rollout as R
    from taskmem_jax.memory.prompt import read_window_prompt
    from taskmem_jax.sampling import SamplingParams
    from helpers import CLIP_GRID as grid
    print({k: round(v, 1) for k, v in times.items()}, flush=True)
    ckpt, processor = tiny()
    template = R.build_template(processor, grid, [2.5, 7.5], 6, prompt=read_window_prompt(ckpt))
    pixels = np.random.default_rng(0).standard_normal((4, 3, int(np.prod(grid)), 1536)).astype(np.float32)
    stop = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    sp = SamplingParams(8, stop_token_ids=(stop,), pad_token_id=processor.pad_token_id)
    fmt = R.TokenFormat(-1, (), (-1,))
    tokens = {}
    for preset in (None, "fsdp_tensor"):
      mesh = None if preset is None else shd.make_mesh(preset)
      model = qwen3_vl.from_pretrained(ckpt, dtype=np.float32, mesh=mesh, preset=preset or "fsdp")
      if preset is not None:
        assert spread(nnx.state(model, nnx.Param)) == 8, preset
      features, deepstack = R.encode_clips(model, pixels, grid)
      out = R.rollout(model, template, features, deepstack, sp, fmt, mesh=mesh, preset=preset or "fsdp")
      if preset is not None:
        assert spread(nnx.state(model, nnx.Param)) == 8, preset  # still sharded: nothing gathered them
      tokens[preset] = (out.tokens, out.logprobs)
    for preset in ("fsdp_tensor",):
      np.testing.assert_array_equal(tokens[preset][0], tokens[None][0], err_msg=preset)
      np.testing.assert_allclose(tokens[preset][1], tokens[None][1], atol=1e-4, err_msg=preset)
    times["rollout"] = time.perf_counter() - tic

    # --- Phase One: one step of the shipped (dense) policy -------------------------------------
    tic = time.perf_counter()
    if os.path.isfile(os.path.join("assets", "synthworld_policy", "config.json")):
      from helpers import LengthJudge, phase_one_config as p1_config
      from experiments.phase_one import load_policy, make_source
      from taskmem_jax.rl.trainer import train as p1_train
      p1 = {}
      for preset in (None, "fsdp_tensor"):
        cfg = p1_config(f"{tmp}/p1_{preset}")
        # One stream: a whole step (sampling, scoring, the update) at half the sampling of two.
        cfg.num_streams, cfg.group_size, cfg.steps, cfg.max_new_tokens = 1, 4, 1, 48
        cfg.mesh = {} if preset is None else {"preset": preset}
        model, processor, prompt = load_policy(cfg)  # sharded presets: read straight into the shards
        if preset is not None:
          assert spread(nnx.state(model, nnx.Param)) == 8, preset
        result = p1_train(cfg, model, processor, make_source(cfg), LengthJudge(), prompt=prompt, progress=False)
        assert sum(h["updates"] for h in result["history"]) >= 1, preset
        p1[preset] = (result["history"], leaves(nnx.state(result["model"], nnx.Param)))
      init = leaves(nnx.state(qwen3_vl.from_pretrained(cfg.checkpoint, dtype=np.float32), nnx.Param))
      for preset in ("fsdp_tensor",):
        for key in ("reward", "loss"):
          a, b = ([h.get(key, np.nan) for h in p1[x][0]] for x in (preset, None))
          np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=f"{preset} {key}")
        same_update(init, p1[None][1], p1[preset][1], "phase one " + preset)
    times["phase_one"] = time.perf_counter() - tic
    # --- Phase Two: one task's adapter and memories, with the backbone read into fsdp shards ------
    tic = time.perf_counter()
    if os.path.isfile(os.path.join("assets", "synthworld_policy", "config.json")):
      from experiments import phase_two as p2
      from taskmem_jax.configs import phase_two_synthworld
      from taskmem_jax.envs.synthworld import phase_two as experiment
      p2_results = {}
      for preset in ("", "fsdp"):
        cfg = phase_two_synthworld.get_config("demo")
        # A 2-clip stream whose counting adapter takes over after the first question (at clip 1), trained on
        # contexts of 2-clip training streams (all of them clip 1): few window shapes, so few compilations.
        cfg.clips, cfg.tasks, cfg.drift_ks, cfg.update_positions, cfg.train_clips = 2, "counting", (1,), (1,), 2
        cfg.num_contexts, cfg.cache.num_samples, cfg.cache.max_new_tokens, cfg.max_new_tokens = 1, 2, 64, 64
        cfg.dpo.steps, cfg.dpo.pairs_per_step, cfg.dpo.num_minibatches = 1, 1, 1
        cfg.mesh.preset = preset
        p2_results[preset] = experiment.public(p2.run(cfg, f"{tmp}/p2_{preset or 'one'}", progress=None))
      untimed = lambda r: {t: {**v, "adapters": [{k: x for k, x in a.items() if not k.endswith("_s")}
                                                 for a in v["adapters"]]} for t, v in r["phase_two"].items()}
      assert p2_results["fsdp"]["phase_two"]["counting"]["after"]["n"] > 0
      assert untimed(p2_results["fsdp"]) == untimed(p2_results[""])
      assert p2_results["fsdp"]["fact_mentions"] == p2_results[""]["fact_mentions"]
    times["phase_two"] = time.perf_counter() - tic
""")


def _run(tmp_path, *sections, models=("tiny", "tiny-moe")):
  """The script's shared head and the named sections (by the start of their "# --- " title), in a subprocess
  with 8 forced host devices; models: the SFT section's."""
  head, *parts = re.split(r"\n(?=# --- )", SCRIPT)
  chosen = [part for part in parts if any(part.startswith("# --- " + name) for name in sections)]
  assert len(chosen) == len(sections), sections
  script = "\n".join([head, *chosen, 'print({k: round(v, 1) for k, v in times.items()})', 'print("ok")'])
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": ROOT + os.pathsep + os.path.join(ROOT, "tests")}
  out = subprocess.run([sys.executable, "-c", script, str(tmp_path), ",".join(models)], env=env, capture_output=True,
                       text=True, timeout=900, cwd=ROOT)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  assert out.stdout.strip().endswith("ok"), out.stdout[-2000:]


# Five subprocesses rather than one, so that pytest-xdist can run them side by side.
@pytest.mark.skipif(sys.platform == "win32", reason="forced host devices")
def test_sft_step_under_fsdp_and_fsdp_tensor_equals_one_device(tmp_path):
  _run(tmp_path, "SFT", models=("tiny",))


@pytest.mark.skipif(sys.platform == "win32", reason="forced host devices")
def test_sft_step_of_tiny_moe_under_expert_equals_one_device(tmp_path):
  _run(tmp_path, "SFT", models=("tiny-moe",))


@pytest.mark.skipif(sys.platform == "win32", reason="forced host devices")
def test_dpo_step_and_rollout_under_a_mesh_equal_one_device(tmp_path):
  _run(tmp_path, "DPO", "the rollout scan")


@pytest.mark.skipif(sys.platform == "win32", reason="forced host devices")
def test_phase_one_under_a_mesh_equals_one_device(tmp_path):
  _run(tmp_path, "Phase One")


@pytest.mark.skipif(sys.platform == "win32", reason="forced host devices")
def test_phase_two_under_a_mesh_equals_one_device(tmp_path):
  _run(tmp_path, "Phase Two")
