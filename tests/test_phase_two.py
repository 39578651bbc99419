"""Phase Two deployed on a stream: the adapter takes over after its update question (causally, as a deployed
agent, or regenerating the whole stream, as the official pipeline), each later adapter continues the memory
of the one before, and the DPO histories become event files. The end-to-end run is test_demo's."""

import numpy as np
import pytest

from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld.adapt import task_keys, world_benchmark, world_clips, world_preparer
from taskmem_jax.envs.synthworld.video import render_clip
from taskmem_jax.eval import streaming
from taskmem_jax.memory.store import schedule
from taskmem_jax.phase_two.adapt import Adapter


def _fake_writer(calls):
  """memory.memorise's stand-in: memory "<who> <clip>." for every clip from first_clip on (who: the hint's
  first question, or "base"), with the video item the stream's clips give."""
  def write(model, processor, streams, sampling, *, prompt, hint=None, memories=None, first_clip=0, on_clip=None,
            **kwargs):
    who = hint[0] if hint else "base"
    (stream,), (memory,) = streams, memories
    for clip in range(first_clip, stream.num_clips):
      calls.append((who, clip, stream.clip_item(clip)))
      memory.add(clip, f"{who} {clip}.")
      on_clip(0, clip, None)
    return []

  return write


def _world_evaluation(tmp_path, monkeypatch, deploy):
  world = sw.generate(1000, sw.WorldConfig(num_clips=8))
  tasks = sw.make_tasks(world, seed=1000, tasks=("attribute", "counting"))
  evaluation = streaming.StreamingEvaluation(world_benchmark(world, tasks), str(tmp_path / deploy), (None, None, None),
                                             deploy=deploy, preparer=world_preparer(world), clips=world_clips(world))
  evaluation.adapters = {key: Adapter(key, np.zeros((1, 2)), [key], {}) for key in ("attribute@10", "attribute@3",
                                                                                     "counting@2")}
  calls = []
  monkeypatch.setattr(streaming, "memorise", _fake_writer(calls))
  monkeypatch.setattr(streaming.steer_lib, "set_steer", lambda model, values: None)
  return world, tasks, evaluation, calls


def test_causal_adapters_take_over_after_their_update_question_and_continue_the_one_before(tmp_path, monkeypatch):
  world, tasks, evaluation, calls = _world_evaluation(tmp_path, monkeypatch, "causal")
  stream = evaluation.benchmark.streams[0]
  attribute = tasks["attribute"]
  assert len(attribute) > 10 and [q.qid for q in stream.questions] == sorted(
      (q.qid for q in stream.questions), key=lambda qid: next(q.ask_after for q in stream.questions if q.qid == qid))
  assert task_keys(evaluation, "attribute") == ["attribute@3", "attribute@10"]
  start = {u: attribute[u - 1].asked_after_clip + 1 for u in (3, 10)}  # the clip after the update question's
  assert [evaluation.adapter_start(stream, f"attribute@{u}") for u in (3, 10)] == [start[3], start[10]]
  assert evaluation.previous_tag("attribute@10") == "attribute@3" and evaluation.previous_tag("attribute@3") == "base"
  memory = evaluation.memory(stream, "attribute@10")
  expected = {c: ("base" if c < start[3] else "attribute@3" if c < start[10] else "attribute@10") + f" {c}."
              for c in range(world.num_clips)}
  assert dict(memory.items()) == expected
  # Each clip was written once per memory it belongs to (base, then @3, then @10), each from its own start.
  assert [(who, clip) for who, clip, _ in calls] == (
      [("base", c) for c in range(8)] + [("attribute@3", c) for c in range(start[3], 8)] +
      [("attribute@10", c) for c in range(start[10], 8)])
  item = calls[0][2]
  np.testing.assert_array_equal(item["video"].frames, render_clip(world, 0.0, 10.0).frames)  # rendered in memory
  # Questions read the adapter of the largest N <= their index; a rerun reads the memories from disk.
  assert [evaluation.memory_tag(q) for q in attribute[:11]] == ["base"] * 3 + ["attribute@3"] * 7 + ["attribute@10"]
  calls.clear()
  assert dict(evaluation.memory(stream, "attribute@10").items()) == expected and not calls
  # An adapter whose update question comes after every other question of its task reads nothing: not served.
  last = len(tasks["counting"])
  assert evaluation.serves("counting@2") and not evaluation.serves(f"counting@{last}")


def test_regenerated_adapters_write_the_whole_stream(tmp_path, monkeypatch):
  world, _, evaluation, calls = _world_evaluation(tmp_path, monkeypatch, "regenerate")
  stream = evaluation.benchmark.streams[0]
  memory = evaluation.memory(stream, "attribute@10")
  assert dict(memory.items()) == {c: f"attribute@10 {c}." for c in range(world.num_clips)}
  assert {who for who, _, _ in calls} == {"attribute@10"}  # no base memory needed
  assert evaluation.serves("counting@2")
  with pytest.raises(ValueError, match="deploy='later'"):
    streaming.StreamingEvaluation(evaluation.benchmark, str(tmp_path), (None, None, None), deploy="later")


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


