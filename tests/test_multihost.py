"""Two JAX processes on 127.0.0.1 (CPU, gloo collectives, 2 forced host devices each = a 4-device global
fsdp mesh) run training/sft.train for 3 steps, each process feeding its rows of the same batches; the losses
and the update must agree with each other and with one process running the same on 2 devices. Then
Phase One (rl/trainer.train) runs 2 steps data parallel: each process samples, scores and differentiates
its stream on its own 2 devices, and the all-reduced updates, the metrics and the exported policy must
equal those of one process with 2 devices training both streams. Last, a Phase-Two adapter
(phase_two.adapt.train_adapter): each process samples and judges its half of the contexts, DPO
all-reduces over both processes' pairs, and the steer must equal one process's.

One test: the two processes run the three stages (SFT, Phase One, Phase Two) one after the other, then the
single one does; each process starts JAX, joins the collectives and loads the policy once. Sizes are kept to
what each claim needs, and windows to one shape each: on CPU compiling is most of the cost.

This file is also the worker: ``python tests/test_multihost.py PROCESS_ID NUM_PROCESSES PORT OUT.npz STAGES``
(STAGES: comma-separated, of sft, phase_one, phase_two).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.multiprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY = os.path.join(ROOT, "assets", "synthworld_policy")


def worker(process_id: int, num_processes: int, port: int, out: str, stages: list[str]) -> None:
  import jax

  from taskmem_jax import distributed

  distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
  results = {"devices": jax.device_count(), "processes": jax.process_count()}
  workdir = lambda name: os.path.join(os.path.dirname(out), f"{name}_{num_processes}")  # noqa: E731
  if "sft" in stages:
    results.update(_sft_run(num_processes, workdir("sft")))
  if "phase_one" in stages:
    results.update(_phase_one_run(workdir("phase_one")))
  if "phase_two" in stages:
    results.update(_phase_two_run())
  np.savez(out, **results)


def _sft_run(num_processes, workdir):
  """training/sft.train itself, 3 steps of 4 text rows (its own data pipeline, orbax checkpoints written
  by every process into one directory): the loss history, the update (trained - initial parameters, gathered
  and flat) and how many parameters the mesh shards."""
  import types

  import jax
  from flax import nnx
  from jax.experimental import multihost_utils

  from taskmem_jax import sharding
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.training import train

  preset = "fsdp" if num_processes > 1 else "single"
  mesh = sharding.make_mesh(preset)
  rng = np.random.default_rng(3)
  examples = []
  for n in (9, 12, 14, 11, 10, 13, 8, 12):
    ids = rng.integers(1, 240, size=n).astype(np.int32)
    examples.append({"input_ids": ids, "loss_mask": (np.arange(n) >= n // 2).astype(np.int32)})
  cfg = types.SimpleNamespace(workdir=workdir, export_dir="", batch_size=4, buckets=(16,), steps=3, seed=0, lr=1e-3,
                              warmup_steps=1, end_lr_ratio=0.1, weight_decay=0.01, b1=0.9, b2=0.95, grad_clip=1.0,
                              log_every=1, save_every=2, keep_checkpoints=1)
  model = qwen3_vl.init_random(qwen3_vl.preset("tiny"), seed=0)
  initial = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  out = train(cfg, model, examples, 0, progress=False, mesh=mesh, preset=preset)
  trained = nnx.state(out["model"], nnx.Param)
  sharded = sum(1 for x in jax.tree.leaves(trained) if not x.sharding.is_fully_replicated)
  full = multihost_utils.process_allgather(trained, tiled=True)
  update = np.concatenate([(np.asarray(a, np.float64) - np.asarray(b, np.float64)).ravel()
                           for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(initial))])
  return {"sft_losses": np.array([h["loss"] for h in out["history"]]), "update": update, "sharded": sharded}


PHASE_ONE_KEYS = ("reward", "pass_rate", "memory_tokens", "response_tokens", "advantage_abs", "pg_loss",
                  "grad_norm")


def _phase_one_run(workdir):
  """rl/trainer.train for 2 steps (1 off-policy, 1 on-policy) of 2 streams x 4 samples in 2 mini-batches,
  from the shipped policy with helpers.LengthJudge (rewards that vary within a group, so every step
  updates), each member's params over this process's devices: the history's statistics, the trained
  policy's parameters (flat) and what was written."""
  import jax
  from flax import nnx
  from jax.experimental import multihost_utils

  from taskmem_jax.configs import phase_one_synthworld
  from experiments.phase_one import load_policy, make_source
  from taskmem_jax.rewards import SYNTHWORLD_TAGS
  from taskmem_jax.rl.trainer import train

  from helpers import LengthJudge

  cfg = phase_one_synthworld.get_config()
  cfg.workdir = workdir
  cfg.num_streams, cfg.group_size, cfg.steps, cfg.off_policy_steps = 2, 4, 2, 1
  # One-clip videos: each step shows new streams' first windows, so the second step (sampling from the
  # updated policy) reuses the first one's compilations.
  cfg.n_min, cfg.n_max, cfg.world_clips = 1, 2, 1
  cfg.max_new_tokens, cfg.reward.memory_token_threshold, cfg.lr, cfg.temperature = 64, 60, 1e-4, 1.0
  cfg.mesh = {"preset": "fsdp", "fsdp": -1}
  cfg.num_minibatches = 2  # one stream each: a process with no group in a mini-batch still joins its update
  model, processor, prompt = load_policy(cfg)
  # The loaded policy spans every process's devices; its initial values, gathered, for the update.
  initial = np.concatenate([np.asarray(multihost_utils.process_allgather(x, tiled=True), np.float64).ravel()
                            for x in jax.tree.leaves(nnx.state(model, nnx.Param))])
  out = train(cfg, model, processor, make_source(cfg), LengthJudge(), prompt=prompt, tags=SYNTHWORLD_TAGS,
              progress=False)
  params = jax.tree.leaves(nnx.state(out["model"], nnx.Param))
  # ZeRO-1 over processes: per device, the AdamW moments' share against the parameters' (1 on one process).
  from taskmem_jax.rl import population as pop
  from taskmem_jax.training.optim import TrainState, make_optimizer
  mesh = pop.make_mesh(1, cfg.mesh)
  abstract = jax.eval_shape(lambda p: pop.stack([TrainState(np.int32(0), p, make_optimizer(cfg).init(p))]),
                            nnx.state(out["model"], nnx.Param))
  sharding = pop.state_sharding(abstract, mesh, "fsdp")
  per_device = lambda tree, sh: sum(np.prod(s.shard_shape(x.shape)) for x, s in  # noqa: E731
                                    zip(jax.tree.leaves(tree), jax.tree.leaves(sh)))
  zero_ratio = per_device(abstract.opt_state, sharding.opt_state) / (2 * per_device(abstract.params, sharding.params))
  history = np.array([[h.get(k, np.nan) for k in PHASE_ONE_KEYS] for h in out["history"]], np.float64)
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines() if jax.process_index() == 0 else []
  return {"p1_history": history, "p1_updates": np.array([h["updates"] for h in out["history"]]),
          "p1_update": np.concatenate([np.asarray(x, np.float64).ravel() for x in params]) - initial,
          "p1_lines": len(lines), "p1_export": os.path.isfile(os.path.join(workdir, "export", "model.safetensors")),
          "p1_local_devices": len(params[0].sharding.device_set), "p1_zero_ratio": zero_ratio}


def _phase_two_run():
  """train_adapter on 6 contexts x 4 rollouts of the shipped policy (LengthJudge for quality, a task judge
  that prefers the shorter memory), DPO 1 step of 2 mini-batches, over
  sharding.mesh_from_config(per_process=True) with the fsdp preset: the steer, the DPO losses and the
  pair counts."""
  import ml_collections

  from taskmem_jax.configs import phase_two_synthworld
  from taskmem_jax import distributed, sharding
  from taskmem_jax.adapters import steer as steer_lib
  from taskmem_jax.envs.synthworld import policy_world_config
  from taskmem_jax.envs.synthworld.source import SynthWorldSource
  from taskmem_jax.memory.prompt import read_window_prompt
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.phase_two.adapt import train_adapter
  from taskmem_jax.phase_two.mining import CacheConfig
  from taskmem_jax.processing import Qwen3VLProcessor
  from taskmem_jax.rewards import SYNTHWORLD_TAGS, RewardConfig
  from taskmem_jax.rewards.task_judge import Preference, TaskJudge

  from helpers import LengthJudge

  class Shorter(TaskJudge):
    def prefer(self, questions, first, second):
      a, b = len(first.split()), len(second.split())
      return Preference(0 if a < b else 1 if b < a else -1)

  policy = POLICY
  mesh, preset = sharding.mesh_from_config(ml_collections.ConfigDict(dict(preset="fsdp", tensor=0, expert=0)),
                                           per_process=True)
  model = steer_lib.add_steer(qwen3_vl.from_pretrained(policy, dtype=np.float32, mesh=mesh, preset=preset), [1])
  model = distributed.local_model(model, mesh)
  processor = Qwen3VLProcessor.from_pretrained(policy)
  # Two-clip videos: every training context is a second window (clip 1, the teacher's first memory shown),
  # so all contexts share one sampling compilation.
  source = SynthWorldSource(policy_world_config(policy, num_clips=2), seed_base=20_000, teacher_budget=40)
  dpo = phase_two_synthworld.get_config().dpo
  dpo.steps, dpo.pairs_per_step, dpo.num_minibatches = 1, 4, 2  # two updates, each over both processes' pairs
  adapter = train_adapter(model, processor, "ocr", ["What number does the sign show?"], source, LengthJudge(),
                          Shorter(), RewardConfig(memory_token_threshold=60),
                          CacheConfig(num_samples=4, max_new_tokens=64), dpo, prompt=read_window_prompt(policy),
                          num_contexts=6, seed=3,
                          tags=SYNTHWORLD_TAGS, mesh=mesh, preset=preset)
  return {"p2_steer": adapter.values, "p2_pairs": adapter.stats["pairs"], "p2_compared": adapter.stats["compared"],
          "p2_losses": np.array([h["loss"] for h in adapter.stats["history"]])}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(process_id, num_processes, port, out, devices, stages):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.Popen([sys.executable, os.path.abspath(__file__), str(process_id), str(num_processes),
                           str(port), out, ",".join(stages)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait(procs):
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=900)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]


def _run(tmp_path, *stages):
  """The stages in the two processes, then in the single one: their results, as (process 0's, process
  1's, the single process's). One after the other, because process 0's local programs (sampling, the
  vision tower, the model's init) are the single process's on the same device ids: from the persistent
  compilation cache, the single process compiles little."""
  port = _free_port()
  outs = [str(tmp_path / f"p{k}.npz") for k in range(2)] + [str(tmp_path / "single.npz")]
  start = time.time()
  _wait([_launch(k, 2, port, outs[k], 2, stages) for k in range(2)])
  _wait([_launch(0, 1, 0, outs[2], 2, stages)])
  p0, p1, single = (np.load(o) for o in outs)
  print(f"{', '.join(stages)}: 3 processes in {time.time() - start:.1f} s")
  assert int(p0["devices"]) == 4 and int(p0["processes"]) == 2
  assert int(p1["devices"]) == 4 and int(p1["processes"]) == 2
  assert int(single["devices"]) == 2 and int(single["processes"]) == 1
  return p0, p1, single


def test_two_processes_match_one(tmp_path):
  p0, p1, single = _run(tmp_path, "sft", "phase_one", "phase_two")
  _check_sft(p0, p1, single)
  _check_phase_one(p0, p1, single)
  _check_phase_two(p0, p1, single)


def _check_sft(p0, p1, single):
  # The SFT trainer over one fsdp mesh of both processes' devices (its parameters sharded across them): both
  # feed their rows of the same batches; the losses and the update are one process's.
  assert int(p0["sharded"]) > 0 and int(single["sharded"]) == 0
  assert len(p0["sft_losses"]) == 3
  np.testing.assert_array_equal(p0["sft_losses"], p1["sft_losses"])
  np.testing.assert_array_equal(p0["update"], p1["update"])
  np.testing.assert_allclose(p0["sft_losses"], single["sft_losses"], rtol=1e-5)
  diff = np.linalg.norm(p0["update"] - single["update"])
  assert diff <= 1e-3 * np.linalg.norm(single["update"]), (diff, np.linalg.norm(single["update"]))


def _check_phase_one(p0, p1, single):
  # Phase One, data parallel: both processes hold the same policy and history, equal to one process's.
  assert p0["p1_updates"].sum() >= 1, p0["p1_updates"]  # it really trained
  assert int(p0["p1_local_devices"]) == 2 and int(single["p1_local_devices"]) == 2
  np.testing.assert_array_equal(p0["p1_history"], p1["p1_history"])
  np.testing.assert_array_equal(p0["p1_update"], p1["p1_update"])
  # Sharded reductions (the clip's global norm, metric means) sum in another order: pg_loss, a mean of
  # near-cancelling terms, moves in its 6th digit; the sampled tokens and rewards are the same.
  np.testing.assert_allclose(p0["p1_history"], single["p1_history"], rtol=1e-4, atol=1e-9)
  np.testing.assert_array_equal(p0["p1_history"][:, :4], single["p1_history"][:, :4])
  np.testing.assert_array_equal(p0["p1_updates"], single["p1_updates"])
  # As in test_mesh_steps: Adam turns a near-zero gradient's rounding into a full step for a few elements,
  # so the updates are compared by their norm.
  diff = np.linalg.norm(p0["p1_update"] - single["p1_update"])
  assert np.linalg.norm(single["p1_update"]) > 0
  assert diff <= 1e-3 * np.linalg.norm(single["p1_update"]), (diff, np.linalg.norm(single["p1_update"]))
  assert float(single["p1_zero_ratio"]) > 0.999 and 0.5 <= float(p0["p1_zero_ratio"]) < 0.6  # moments halved
  # One writer: each step's row is in metrics.jsonl once (not once per process); the export is there.
  assert int(p0["p1_lines"]) == 2 and bool(p0["p1_export"])


def _check_phase_two(p0, p1, single):
  # Phase Two: the contexts split over the processes, one DPO over all their pairs.
  assert int(p0["p2_pairs"]) >= 2, int(p0["p2_pairs"])  # pairs to train on (from both processes' contexts)
  for key in ("p2_pairs", "p2_compared"):
    assert int(p0[key]) == int(p1[key]) == int(single[key]), key
  assert np.abs(single["p2_steer"]).max() > 0
  np.testing.assert_array_equal(p0["p2_steer"], p1["p2_steer"])
  np.testing.assert_allclose(p0["p2_steer"], single["p2_steer"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(p0["p2_losses"], single["p2_losses"], rtol=1e-5)


if __name__ == "__main__":
  sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]  # the package, and helpers.LengthJudge
  worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5].split(","))
