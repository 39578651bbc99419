"""Phase Two on a SynthWorld stream, through the benchmarks' path: the world is a one-stream benchmark
(`world_benchmark`, its clips rendered in memory: `world_clips` for the jitted window scan, `world_preparer` for
the window loop), its adapters are
phase_two.online.adapt_benchmark's and its memories eval.streaming.StreamingEvaluation's, deployed causally
(taskmem-spec.md §3.5 as an agent on one long stream runs it):
1. the Phase-One memory (zero steer, no hint) is written for the whole stream, and a task's first questions
   (5 by default; the official schedule retrains after 10, 30 and 50) are answered from it;
2. then the task's adapter is trained: contexts from training streams (SynthWorldSource), the hint = up to 5
   of those questions, rollouts, task-judge pairs, DPO on the steer (phase_two.mining, phase_two.dpo);
3. the clips after the update question arrived are written with that adapter's steer and hint (the clips
   before keep the memory already written); the task's later questions are answered from that memory.
`compare` scores Phase One vs Phase One + Two on the same later questions per task and the cross-task
matrix (the memory of task i's adapter asked task j's questions, the paper's Table 4); `drift` switches the
task mid-stream. A steer swap between tasks never recompiles.
"""

from __future__ import annotations

from typing import Callable

from taskmem_jax.benchmarks.base import Benchmark, Stream
from taskmem_jax.envs.synthworld.qa import evaluate_memory
from taskmem_jax.envs.synthworld.reader import parse_memory
from taskmem_jax.envs.synthworld.video import render_clip
from taskmem_jax.envs.synthworld.world import KINDS, World
from taskmem_jax.memory.memorise import ClipStream
from taskmem_jax.memory.store import EpisodicMemory


def world_benchmark(world: World, tasks: dict) -> Benchmark:
  """The world as a one-stream benchmark ("synthworld_<seed>") asking the questions of `tasks` (task ->
  WorldQuestions in arrival order); render it with world_clips (and world_preparer)."""
  questions = sorted((q for qs in tasks.values() for q in qs), key=lambda q: q.ask_after)  # stable: task order kept
  return Benchmark("synthworld", [Stream(f"synthworld_{world.seed}", (), tuple(questions), duration=world.duration)])


def world_preparer(world: World) -> Callable:
  """StreamingEvaluation's preparer for world_benchmark(world): each window's clip rendered in memory."""
  def prepare(window, previous):
    return {"type": "video", "video": render_clip(world, window.start, window.end)}, previous, None

  return lambda stream: prepare


def world_clips(world: World) -> Callable:
  """StreamingEvaluation's clips for world_benchmark(world): the jitted scan's clips, rendered in memory."""
  source = ClipStream(world.num_clips, lambda k: {"type": "video", "video": render_clip(world, 10.0 * k, 10.0 * k + 10)})
  return lambda stream, interval: source


def task_keys(evaluation, task: str) -> list[str]:
  """The task's adapters in the evaluation, in update order ("task@5", "task@10", ...)."""
  return sorted((k for k in evaluation.adapters if evaluation.task_of(k) == task), key=evaluation.update_bound)


def fact_mentions(memory: EpisodicMemory, clips) -> dict[str, float]:
  """Per fact kind: facts of that kind stated per memory, over the memories of `clips`."""
  held = [memory.get(c) for c in clips if c in memory]
  counts = {k: 0 for k in KINDS}
  for description in held:
    for f in parse_memory(description):
      counts[f.kind] += 1
  return {k: v / max(len(held), 1) for k, v in counts.items()}


def compare(evaluation, world: World, tasks: dict, answerer: Callable, update_positions=(5,)) -> dict:
  """Phase One vs Phase One + Two on world_benchmark(world, tasks) whose evaluation holds the adapters
  (deploy="causal"). A task is compared when its first adapter takes over before the stream ends; its
  questions after the first update position are scored, from the plain memory and from the memory of its
  last adapter. Returns {"phase_one_memory", "memories" (task -> adapted memory), "phase_two" (task ->
  {"before", "after", "switch_clip", "adapters": their stats}), "cross_task" (i -> j -> acc),
  "fact_mentions" ({"phase_one" | task: kind -> rate} over the adapted clips), "switch" (task -> clip),
  "late_questions"}."""
  stream = evaluation.benchmark.streams[0]
  base = evaluation.memory(stream, "base")
  first = min(u for u in update_positions if u >= 1)
  memories, switch, late, phase_two = {}, {}, {}, {}
  for task, questions in tasks.items():
    keys = task_keys(evaluation, task)
    start = evaluation.adapter_start(stream, keys[0]) if keys else world.num_clips
    if start >= world.num_clips:
      continue  # not adapted, or only after the stream's end
    switch[task], late[task] = int(start), questions[first:]
    memories[task] = evaluation.memory(stream, keys[-1])
    _, before = evaluate_memory(world, base, {task: late[task]}, answerer)
    _, after = evaluate_memory(world, memories[task], {task: late[task]}, answerer)
    phase_two[task] = {"before": before["overall"], "after": after["overall"], "switch_clip": switch[task],
                       "adapters": [{k: v for k, v in evaluation.adapters[key].stats.items() if k != "history"}
                                    for key in keys]}
  cross = {i: {j: evaluate_memory(world, memories[i], {j: late[j]}, answerer)[1]["overall"]["acc"] for j in memories}
           for i in memories}
  mentions = {}
  if memories:
    clips = range(min(switch.values()), world.num_clips)
    mentions = {"phase_one": fact_mentions(base, clips),
                **{t: fact_mentions(m, range(switch[t], world.num_clips)) for t, m in memories.items()}}
  return {"phase_one_memory": base, "memories": memories, "phase_two": phase_two, "cross_task": cross,
          "fact_mentions": mentions, "switch": switch, "late_questions": late}


def drift(evaluation, world: World, old, new_task: str, questions, answerer: Callable, train_adapter_fn: Callable,
          ks=(1, 3, 5)) -> dict:
  """The task switches to `new_task` mid-stream while `old` (another task's adapter) is deployed.

  For k new-task questions seen, an adapter trained on those k is compared with the stale adapter and
  with Phase One, each writing the memory (evaluation.write_memory over the plain memory) from the clip
  after the k-th question arrived; all are scored on the new task's questions after the largest k. Returns
  {"k": [...], "new": [acc], "stale": [acc], "phase_one": acc, "recovered_at": the smallest k whose adapter
  is at least as accurate as the one trained on max(ks)}."""
  late = questions[max(ks):]
  if not late:
    raise ValueError(f"drift: {new_task} has {len(questions)} questions; need more than {max(ks)}")
  stream = evaluation.benchmark.streams[0]
  _, p1 = evaluate_memory(world, evaluation.memory(stream, "base"), {new_task: late}, answerer)
  new_acc, stale_acc = [], []
  for k in ks:
    switch = questions[k - 1].asked_after_clip + 1
    adapter = train_adapter_fn(new_task, [q.text for q in questions[:k]][-5:])
    for name, target, acc in (("new", adapter, new_acc), ("stale", old, stale_acc)):
      memory = evaluation.write_memory(stream, f"drift-{name}-{new_task}@{k}", target, start=switch, under="base")
      acc.append(evaluate_memory(world, memory, {new_task: late}, answerer)[1]["overall"]["acc"])
  best = new_acc[-1]
  recovered = next((k for k, a in zip(ks, new_acc) if a >= best), ks[-1])
  return {"from": old.task, "to": new_task, "k": list(ks), "new": new_acc, "stale": stale_acc,
          "phase_one": p1["overall"]["acc"], "recovered_at": recovered, "questions_scored": len(late)}
