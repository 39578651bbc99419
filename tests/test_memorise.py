"""memory.memorise, the rollout over streams, against the window loop (memory.loop.memorize_stream) on the
shipped SynthWorld policy: the same memories, with a hint and a steer; reproducible sampling; a fixed number of
compiled programs whatever the streams' lengths."""

import os

import numpy as np
import pytest

from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld.video import render_clip
from taskmem_jax.memory import rollout as R
from taskmem_jax.memory.loop import RolloutConfig, memorize_stream
from taskmem_jax.memory.memorise import ClipStream, memorise
from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.memory.store import EpisodicMemory

POLICY = os.path.join(os.path.dirname(__file__), "..", "assets", "synthworld_policy")
HINT = ["What is written on the sign?", "How many people are there?"]


@pytest.fixture(scope="module")
def policy():
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.processing import Qwen3VLProcessor
  model = qwen3_vl.from_pretrained(POLICY, dtype=np.float32)
  steer_lib.add_steer(model)
  return model, Qwen3VLProcessor.from_pretrained(POLICY), read_window_prompt(POLICY)


def world_clips(seed: int, num_clips: int):
  world = sw.generate(seed, sw.policy_world_config(POLICY, num_clips=num_clips))
  clip = lambda k: {"type": "video", "video": render_clip(world, 10.0 * k, 10.0 * k + 10)}
  return world, ClipStream(num_clips, clip)


@pytest.mark.slow
def test_scan_writes_the_loops_memories_with_a_hint_and_a_steer(policy):
  model, processor, prompt = policy
  worlds = [world_clips(1000, 7), world_clips(1001, 5)]
  steer = 0.05 * np.random.default_rng(0).standard_normal(steer_lib.get_steer(model).shape).astype(np.float32)
  cfg = RolloutConfig(max_new_tokens=64, memory_budget=48)
  scan = memorise(model, processor, [c for _, c in worlds], cfg.sampling(), prompt=prompt, hint=HINT, steer=steer,
                  chunk=2)
  assert not np.abs(steer_lib.get_steer(model)).any()  # the steer is restored
  steer_lib.set_steer(model, steer)
  try:
    for (world, clips), written in zip(worlds, scan):
      loop, records = memorize_stream(
          model, processor, None, world.duration, cfg, prompt=prompt, task_questions=HINT,
          prepare=lambda w, previous, world=world: ({"type": "video", "video": render_clip(world, w.start, w.end)},
                                                    previous, None))
      assert len(loop) >= 3, "too few memories for the ring to matter"
      assert written.memory.items() == loop.items() and written.mismatches == 0
      assert [r.texts for r in written.records] == [r.texts for r in records]
  finally:
    steer_lib.set_steer(model, np.zeros_like(steer))
  # Without the steer and hint the memories differ: both inputs reach the model.
  plain = memorise(model, processor, [worlds[0][1]], cfg.sampling(), prompt=prompt)[0]
  assert [r.texts for r in plain.records] != [r.texts for r in scan[0].records]


@pytest.mark.slow
def test_sampled_memories_are_reproducible_and_resume_where_they_stopped(policy):
  model, processor, prompt = policy
  _, clips = world_clips(1002, 6)
  sampling = RolloutConfig(max_new_tokens=64, memory_budget=48, temperature=1.0).sampling()
  first = memorise(model, processor, [clips], sampling, prompt=prompt, seed=3)[0]
  again = memorise(model, processor, [clips], sampling, prompt=prompt, seed=3, chunk=1)[0]
  assert [r.texts for r in first.records] == [r.texts for r in again.records]
  other = memorise(model, processor, [clips], sampling, prompt=prompt, seed=4)[0]
  assert [r.texts for r in other.records] != [r.texts for r in first.records]
  # Stopped after clip 2, continued from the saved memory: the same memories.
  kept = EpisodicMemory(10, {c: d for c, d in first.memory.items() if c <= 2})
  resumed = memorise(model, processor, [clips], sampling, prompt=prompt, seed=3, memories=[kept], first_clip=3)[0]
  assert resumed.memory.items() == first.memory.items()


@pytest.mark.slow
def test_streams_of_any_length_compile_a_fixed_number_of_programs(policy):
  """One program per window size of a stream's start (1 to 4 clips) and one chunk of full windows: streams of
  3, 7 and 12 clips (one, two chunks) and a continued stream compile 5 programs, no more."""
  model, processor, prompt = policy
  sampling = RolloutConfig(max_new_tokens=32, memory_budget=32).sampling()
  before = R.TRACE_COUNTS["windows"]
  for seed, n in ((1003, 3), (1004, 7), (1005, 12)):
    memorise(model, processor, [world_clips(seed, n)[1]], sampling, prompt=prompt, chunk=4)
  memorise(model, processor, [world_clips(1006, 9)[1]], sampling, prompt=prompt, chunk=4,
           memories=[EpisodicMemory(10, {4: "the sign changes from 3 to 5."})], first_clip=5)
  assert R.TRACE_COUNTS["windows"] - before == 5


@pytest.mark.slow
def test_batched_window_samples_equal_window_by_window(policy):
  """sample_windows (Phase One's and Phase Two's batched option): windows of 2 to 5 clips with the teacher's
  history and a hint, in one batch, give sample_window's prompts, pixels and greedy samples; sampled draws of a
  window do not depend on the rest of its batch."""
  from taskmem_jax.envs.synthworld.source import SynthWorldSource
  from taskmem_jax.memory.memorise import sample_windows
  from taskmem_jax.memory.sample import WindowSampling, sample_window

  model, processor, prompt = policy
  source = SynthWorldSource(sw.policy_world_config(POLICY, num_clips=8), seed_base=20_000, teacher_budget=28)
  picks = [(1, 1), (2, 5), (3, 3), (4, 7), (5, 2)]
  items = [source.video_item(v, c) for v, c in picks]
  previous = [source.teacher(v).previous(c) for v, c in picks]
  greedy = WindowSampling(2, 48)
  batch = sample_windows(model, processor, items, previous, greedy, 0, prompt=prompt, questions=HINT)
  for one, item, shown in zip(batch, items, previous):
    alone = sample_window(model, processor, item, shown, greedy, 0, prompt=prompt, questions=HINT)
    assert one.prompt_ids.tolist() == alone.prompt_ids.tolist() and one.texts == alone.texts
    np.testing.assert_array_equal(one.pixels, alone.pixels)
  sampled = WindowSampling(3, 48, temperature=1.0)
  both = sample_windows(model, processor, items[:2], previous[:2], sampled, 5, prompt=prompt, window_ids=[7, 8])
  second = sample_windows(model, processor, items[1:2], previous[1:2], sampled, 5, prompt=prompt, window_ids=[8])
  assert both[1].texts == second[0].texts
