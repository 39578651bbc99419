"""Task-adaptive memory on a SynthWorld stream: Phase Two as the paper deploys it (taskmem-spec.md §3.5).

Per task type, on one stream:
1. the Phase-One memory (zero steer, no hint) is written for the whole stream, and the task's first
   questions (5 by default; the official schedule retrains after 10, 30 and 50) are answered from it;
2. then the task's adapter is trained once: contexts from training streams, the task hint = those
   questions, rollouts, task-judge pairs, DPO on the steer (phase_two.mining, phase_two.dpo);
3. memory for the rest of the stream (clips after the update question arrived) is written with that
   task's steer and hint; the task's later questions are answered from it.
Evaluation compares, on the same later questions, Phase One vs Phase One + Two per task, and the
cross-task matrix (the memory of task i's adapter asked task j's questions, the paper's Table 4).

Everything stays on the host except the model calls; a steer swap between tasks never recompiles.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.envs.synthworld.qa import evaluate_memory
from taskmem_jax.envs.synthworld.reader import parse_memory
from taskmem_jax.envs.synthworld.video import render_clip
from taskmem_jax.envs.synthworld.world import KINDS
from taskmem_jax.memory.loop import RolloutConfig, memorize_stream
from taskmem_jax.memory.prompt import WindowPrompt
from taskmem_jax.memory.store import EpisodicMemory
from taskmem_jax.phase_two.adapt import Adapter, update_points


def memorise(model, processor, stream, rollout: RolloutConfig, *, prompt: WindowPrompt, steer=None, hint=None, memory=None,
             first_clip: int = 0, stop_clip: int | None = None) -> EpisodicMemory:
  """The stream's memory (clips rendered in memory), continuing `memory` over clips first_clip ..
  stop_clip - 1 with `steer` values (None = zero) and the task hint in the policy's window `prompt`; the model's steer is zero again
  afterwards."""
  zero = np.zeros_like(steer_lib.get_steer(model))
  steer_lib.set_steer(model, zero if steer is None else steer)
  try:
    memory, _ = memorize_stream(model, processor, None, stream.duration, rollout, prompt=prompt, task_questions=hint or None,
                                memory=memory, first_clip=first_clip, stop_clip=stop_clip,
                                video_item=lambda w: {"type": "video", "video": render_clip(stream, w.start, w.end)})
  finally:
    steer_lib.set_steer(model, zero)
  return memory


def adapted_memory(model, processor, stream, base: EpisodicMemory, segments: list[tuple[int, Adapter]],
                   rollout: RolloutConfig, *, prompt: WindowPrompt) -> EpisodicMemory:
  """`base` up to the first segment's clip, then each (from_clip, adapter) segment's memory (steer + hint)
  up to the next segment's clip; the last segment runs to the end of the stream."""
  first = segments[0][0]
  memory = EpisodicMemory(base.interval, {c: d for c, d in base.items() if c < first})
  for k, (from_clip, adapter) in enumerate(segments):
    stop = segments[k + 1][0] if k + 1 < len(segments) else None
    memory = memorise(model, processor, stream, rollout, prompt=prompt, steer=adapter.values, hint=adapter.hint, memory=memory,
                      first_clip=from_clip, stop_clip=stop)
  return memory


def fact_mentions(memory: EpisodicMemory, clips) -> dict[str, float]:
  """Per fact kind: facts of that kind stated per memory, over the memories of `clips`."""
  held = [memory.get(c) for c in clips if c in memory]
  counts = {k: 0 for k in KINDS}
  for description in held:
    for f in parse_memory(description):
      counts[f.kind] += 1
  return {k: v / max(len(held), 1) for k, v in counts.items()}


def adapt_stream(model, processor, stream, tasks: dict, answerer: Callable, train_adapter_fn: Callable,
                 rollout: RolloutConfig, *, prompt: WindowPrompt, update_positions=(5,), seed: int = 0, progress=None) -> dict:
  """The whole protocol on one stream. tasks: task -> questions in arrival order; train_adapter_fn(task,
  hint) -> Adapter; update_positions: after how many questions of a task its adapter is (re)trained
  ((5,) by default; the official schedule is (10, 30, 50)). Questions after the first update position
  are scored. Returns {"phase_one_memory", "memories" (task -> adapted memory), "adapters" (task -> the
  adapters in order), "phase_two" (task -> {"before", "after"} scores), "cross_task" (i -> j -> acc),
  "fact_mentions" ({"phase_one" | task: kind -> rate} over the adapted clips), "switch" (task -> clip)}."""
  say = progress or (lambda *_: None)
  base = memorise(model, processor, stream, rollout, prompt=prompt)
  say("phase one memory written")
  adapters, memories, switch, late = {}, {}, {}, {}
  for task, questions in tasks.items():
    points = [(clip, hint) for clip, hint in update_points(questions, update_positions, seed=seed)
              if clip < stream.num_clips]
    if not points:
      say(f"{task}: too few questions after the first update position; not adapted")
      continue
    late[task] = questions[min(u for u in update_positions if u >= 1):]
    switch[task] = points[0][0]
    adapters[task] = [train_adapter_fn(task, hint) for _, hint in points]
    memories[task] = adapted_memory(model, processor, stream, base,
                                    [(clip, a) for (clip, _), a in zip(points, adapters[task])], rollout,
                                    prompt=prompt)
    say(f"{task}: adapter(s) trained on {[a.stats['pairs'] for a in adapters[task]]} pairs")
  phase_two, cross = {}, {}
  for task in memories:
    _, before = evaluate_memory(stream, base, {task: late[task]}, answerer)
    _, after = evaluate_memory(stream, memories[task], {task: late[task]}, answerer)
    phase_two[task] = {"before": before["overall"], "after": after["overall"], "switch_clip": switch[task],
                       "adapters": [{k: v for k, v in a.stats.items() if k != "history"} for a in adapters[task]]}
  for i in memories:
    cross[i] = {}
    for j in memories:
      _, scores = evaluate_memory(stream, memories[i], {j: late[j]}, answerer)
      cross[i][j] = scores["overall"]["acc"]
  mentions = {}
  if memories:
    clips = range(min(switch[t] for t in memories), stream.num_clips)
    mentions = {"phase_one": fact_mentions(base, clips),
                **{t: fact_mentions(m, range(switch[t], stream.num_clips)) for t, m in memories.items()}}
  return {"phase_one_memory": base, "memories": memories, "adapters": adapters, "phase_two": phase_two,
          "cross_task": cross, "fact_mentions": mentions, "switch": switch, "late_questions": late}


def drift(model, processor, stream, old: Adapter, new_task: str, questions, answerer: Callable,
          train_adapter_fn: Callable, rollout: RolloutConfig, base: EpisodicMemory, *, prompt: WindowPrompt,
          ks=(1, 3, 5)) -> dict:
  """The task switches to `new_task` mid-stream while `old` (another task's adapter) is deployed.

  For k new-task questions seen, an adapter trained on those k is compared with the stale adapter and
  with Phase One, each writing the memory after the k-th question arrived; all are scored on the new
  task's questions after the largest k. Returns {"k": [...], "new": [acc], "stale": [acc], "phase_one": acc,
  "recovered_at": the smallest k whose adapter is at least as accurate as the one trained on max(ks)}."""
  late = questions[max(ks):]
  if not late:
    raise ValueError(f"drift: {new_task} has {len(questions)} questions; need more than {max(ks)}")
  _, p1 = evaluate_memory(stream, base, {new_task: late}, answerer)
  new_acc, stale_acc = [], []
  for k in ks:
    switch = questions[k - 1].asked_after_clip + 1
    adapter = train_adapter_fn(new_task, [q.text for q in questions[:k]][-5:])
    for target, acc in ((adapter, new_acc), (old, stale_acc)):
      memory = adapted_memory(model, processor, stream, base, [(switch, target)], rollout, prompt=prompt)
      acc.append(evaluate_memory(stream, memory, {new_task: late}, answerer)[1]["overall"]["acc"])
  best = new_acc[-1]
  recovered = next((k for k, a in zip(ks, new_acc) if a >= best), ks[-1])
  return {"from": old.task, "to": new_task, "k": list(ks), "new": new_acc, "stale": stale_acc,
          "phase_one": p1["overall"]["acc"], "recovered_at": recovered, "questions_scored": len(late)}
