"""Phase Two in the stream: the adapter takes over after the update question, pairs are mined and DPO
runs, the Phase-One prefix of the memory is kept, and results and files come out."""

import json
import os

import ml_collections
import numpy as np
import pytest

from taskmem_jax.adapters import steer as S
from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld.adapt import adapt_stream
from taskmem_jax.envs.synthworld.reader import answer
from taskmem_jax.envs.synthworld.source import SynthWorldSource
from taskmem_jax.envs.synthworld.task_judge import SynthWorldTaskJudge
from taskmem_jax.memory.loop import RolloutConfig
from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.phase_two.adapt import train_adapter, update_points
from taskmem_jax.phase_two.mining import CacheConfig
from taskmem_jax.rewards import Judge, RewardConfig, Verdict

POLICY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "synthworld_policy")


class PassAll(Judge):
  """Every memory passes the quality check, so pairs form whatever the policy writes."""

  def faithfulness(self, ctx, descriptions):
    return [Verdict(True)] * len(descriptions)

  non_redundancy = faithfulness


def test_update_points_follow_the_schedule():
  stream = sw.generate(1000, sw.WorldConfig(num_clips=8))
  questions = sw.make_tasks(stream, seed=1000)["attribute"]
  points = update_points(questions, (10, 30, 50), seed=0)
  assert [clip for clip, _ in points] == [questions[u - 1].asked_after_clip + 1 for u in (10, 30, 50)]
  assert all(len(hint) == 5 for _, hint in points)
  assert set(points[1][1]) <= {q.text for q in questions[:30]}
  assert update_points(questions[:3], (5,)) == []


def _dpo():
  c = ml_collections.ConfigDict(dict(steps=2, pairs_per_step=2, num_minibatches=1, beta=0.1, kl_coef=0.1, lr=1e-2,
                                     b1=0.9, b2=0.999, weight_decay=0.01, grad_clip=1.0, temperature=1.0,
                                     buckets=(512, 768, 1024, 1280), seed=0, post_scale=1.5))
  return c


def test_dpo_histories_become_event_files(tmp_path):
  from taskmem_jax.envs.synthworld.phase_two import write_dpo_events
  from taskmem_jax.phase_two.adapt import Adapter
  from taskmem_jax.tensorboard import read_scalars

  run = lambda losses: {"history": [{"step": k + 1, "loss": x, "accuracy": 1.0} for k, x in enumerate(losses)]}
  adapters = {"counting": [Adapter("counting", np.zeros(2), [], run([0.7, 0.5]))],
              "ocr": [Adapter("ocr", np.zeros(2), [], run([0.6])), Adapter("ocr", np.zeros(2), [], run([0.4]))],
              "spatial": [Adapter("spatial", np.zeros(2), [], {"pairs": 0, "history": []})]}
  write_dpo_events({"_adapters": adapters}, str(tmp_path / "tb"))
  scalars = read_scalars(str(tmp_path / "tb"))
  assert scalars["dpo/counting/loss"] == [(1, pytest.approx(0.7)), (2, pytest.approx(0.5))]
  assert scalars["dpo/ocr/update_1/loss"] == [(1, pytest.approx(0.4))] and "dpo/ocr/update_0/accuracy" in scalars
  assert not any(tag.startswith("dpo/spatial") for tag in scalars)  # no pairs, no DPO run


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(POLICY, "config.json")), reason="no shipped policy")
def test_adapt_stream_end_to_end(tmp_path):
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.processing import Qwen3VLProcessor

  model = S.add_steer(qwen3_vl.from_pretrained(POLICY, dtype=np.float32))
  processor = Qwen3VLProcessor.from_pretrained(POLICY)
  stream = sw.generate(1000, sw.policy_world_config(POLICY, num_clips=5))
  tasks = {t: q for t, q in sw.make_tasks(stream, seed=1000, tasks=("counting", "spatial")).items()}
  source = SynthWorldSource(sw.policy_world_config(POLICY, num_clips=4), seed_base=20_000)
  cache = CacheConfig(num_samples=4, max_new_tokens=72)  # room for 4 facts
  stats = []

  def train(task, hint):
    adapter = train_adapter(model, processor, task, hint, source, PassAll(), SynthWorldTaskJudge(),
                            RewardConfig(), cache, _dpo(), prompt=read_window_prompt(POLICY), num_contexts=2,
                            seed=len(stats))
    stats.append(adapter.stats)
    return adapter

  out = adapt_stream(model, processor, stream, tasks, answer, train, RolloutConfig(max_new_tokens=72),
                     prompt=read_window_prompt(POLICY))
  assert set(out["memories"]) == {"counting", "spatial"}
  assert any(s["pairs"] > 0 for s in stats)  # pairs were mined and DPO ran on them
  trained = [a[-1] for a in out["adapters"].values() if a[-1].stats["pairs"]]
  assert trained and all(np.abs(a.values).max() > 0 for a in trained)
  from taskmem_jax.envs.synthworld.phase_two import write_dpo_events
  from taskmem_jax.tensorboard import read_scalars

  scalars = read_scalars(write_dpo_events({"_adapters": out["adapters"]}, str(tmp_path / "tb")))
  for a in trained:
    assert [s for s, _ in scalars[f"dpo/{a.task}/loss"]] == [h["step"] for h in a.stats["history"]]
  assert np.all(S.get_steer(model) == 0)  # the model is left with a zero steer
  base = out["phase_one_memory"]
  for task, memory in out["memories"].items():
    switch = out["switch"][task]
    assert switch == tasks[task][4].asked_after_clip + 1
    assert {c: d for c, d in memory.items() if c < switch} == {c: d for c, d in base.items() if c < switch}
    assert out["phase_two"][task]["before"]["n"] == len(tasks[task]) - 5
  assert set(out["cross_task"]) == {"counting", "spatial"}
  assert set(out["fact_mentions"]) == {"phase_one", "counting", "spatial"}
  json.dumps({k: out[k] for k in ("phase_two", "cross_task", "fact_mentions")})
