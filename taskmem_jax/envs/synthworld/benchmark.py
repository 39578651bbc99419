"""SynthWorld as a streaming benchmark: the same Stream / Question types as the real benchmarks (its
questions are WorldQuestions, Questions with their ground truth), so
experiments/evaluate.py runs the whole streaming protocol (mp4 files, decord, memorise, answer from
memory, score) on a world with ground truth, and the tests can exercise it on a CPU.

Each stream is generate(seed) written to <data_dir>/synthworld_<seed>.mp4; its questions (every task
family) are asked when the clip they wait for has ended: ask_after = (asked_after_clip + 1) * 10 s
(make_questions sets it).
`reader_answerer` answers them with the deterministic SynthWorld reader (no model needed).
"""

from __future__ import annotations

import os

from taskmem_jax.benchmarks.base import Benchmark, Segment, Stream
from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld.reader import answer as reader_answer


def load_synthworld(data_dir: str, seeds, *, clips: int = 8, tasks=sw.TASKS, questions_per_task: int | None = None,
                    render: str | None = None, world: dict | None = None) -> Benchmark:
  """world: WorldConfig fields (e.g. a policy's sw.policy_world); render overrides world's render."""
  os.makedirs(data_dir, exist_ok=True)
  options = dict(world or {})
  if render is not None:
    options["render"] = render
  config = sw.WorldConfig(**{**options, "num_clips": clips})
  # The file name says which world it holds, so that worlds never share a cached mp4.
  variant = config.render + ("_aligned" if config.patch_aligned else "") + (
      f"_f{config.min_facts}-{config.max_facts}" if (config.min_facts, config.max_facts) != (6, 12) else "")
  streams = []
  for seed in seeds:
    world = sw.generate(seed, config)
    path = os.path.join(data_dir, f"synthworld_{seed}_{variant}.mp4")
    if not os.path.exists(path):
      sw.write_stream(world, path)
    questions = sorted((q for qs in sw.make_tasks(world, questions_per_task, tasks=tasks, seed=seed).values()
                        for q in qs), key=lambda q: q.ask_after)
    streams.append(Stream(f"synthworld_{seed}", (Segment(path, 0.0),), tuple(questions), duration=world.duration))
  return Benchmark("synthworld", streams)


def reader_answerer(question: sw.WorldQuestion, memory) -> str | None:
  """answer_mc for SynthWorld questions: the deterministic reader (their ground truth tells it the family)."""
  return reader_answer(question, memory)
