"""Phase Two's adapters: one task's steer trained from preference pairs, and when it is (re)trained.

`train_adapter` runs the official recipe for one task (taskmem-spec.md §3): rollouts with the task hint on
training windows of a source (the interface of rl/streams.py), task-judge pairs (phase_two.mining), and DPO
on the steer from zero (phase_two.dpo); the result is an `Adapter` (steer values, hint, stats).
`update_hints` turns a task's questions in arrival order into the update schedule (the official
10 / 30 / 50) and each update's hint. phase_two/online.py plans and trains a benchmark's adapters with them,
and eval/streaming.py deploys them (SynthWorld's experiment included: envs/synthworld/adapt.py).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from taskmem_jax import distributed
from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.memory.prompt import WindowPrompt
from taskmem_jax.phase_two.mining import CacheConfig, draw_contexts, judge_samples
from taskmem_jax.phase_two.dpo import train_steer


@dataclasses.dataclass
class Adapter:
  """A trained task adapter: steer values [n_layers, H], the hint questions, and how it was made."""
  task: str
  values: np.ndarray
  hint: list[str]
  stats: dict


def training_contexts(source, num: int, seed: int) -> list[tuple[int, int]]:
  """num (video, clip) windows of the training source, clip >= 1 so that some history is shown."""
  rng = np.random.default_rng(seed)
  return [(int(v), int(rng.integers(1, source.num_clips(int(v))))) for v in rng.integers(0, 10_000, num)]


def train_adapter(model, processor, task: str, hint: list[str], source, quality_judge, task_judge, reward,
                  cache_cfg: CacheConfig, dpo_cfg, *, prompt: WindowPrompt, num_contexts: int, seed: int, tags=None,
                  progress: bool = False, mesh=None, preset="fsdp") -> Adapter:
  """Rollouts with the hint on num_contexts training windows (teacher history; mining.draw_contexts), pairs, DPO
  from a zero steer (under `mesh`: dpo.train_steer's placement; prompt: the policy's window prompt). Several
  processes (mesh: sharding.data_parallel_mesh, model: this process's copy): process k takes contexts k, k+n, ...
  and DPO all-reduces over every process's pairs; the adapter is the one a single process would train."""
  tic = time.perf_counter()
  steer_lib.set_steer(model, np.zeros_like(steer_lib.get_steer(model)))  # rollouts come from Phase One
  n, me = jax.process_count(), jax.process_index()
  contexts = []  # (k, item, previous as shown, judge context)
  for k, (video, clip) in enumerate(training_contexts(source, num_contexts, seed)):
    if k % n != me:
      continue  # another process's context
    previous = source.teacher(video).previous(clip)
    if hasattr(source, "prepare"):  # real video: the perception rendering, the history in this window's local ids
      prepared = source.prepare(video, clip, previous)
      item, previous = (None, previous) if prepared is None else prepared[:2]
    else:
      item = source.video_item(video, clip)
    if item is None:  # a window no video covers
      continue
    contexts.append((k, item, previous, source.context(video, clip, previous, item)))
  drawn = draw_contexts(model, processor, [c[1] for c in contexts], [c[2] for c in contexts], hint, cache_cfg, seed,
                        prompt=prompt, context_ids=[c[0] for c in contexts]) if contexts else []
  pairs, pair_ids, compared, preferences = [], [], 0, 0
  for (k, _, _, ctx), samples in zip(contexts, drawn):
    result, pair = judge_samples(processor, samples, hint, ctx, quality_judge, task_judge, reward, cache_cfg,
                                 seed=seed * 7919 + k, tags=tags)
    compared += result.compared
    preferences += len(result.preferences)
    if pair is not None:
      pairs.append(pair)
      pair_ids.append(k)
  total_pairs, compared, preferences = (int(x) for x in distributed.allgather_rows(
      np.array([[len(pairs), compared, preferences]])).sum(0))
  rollout_s = time.perf_counter() - tic
  stats = {"contexts": num_contexts, "pairs": total_pairs, "pair_yield": total_pairs / max(num_contexts, 1),
           "compared": compared, "agreed": preferences, "rollout_s": rollout_s}
  if not total_pairs:
    return Adapter(task, np.zeros_like(steer_lib.get_steer(model)), hint, {**stats, "dpo_s": 0.0, "history": []})
  result = train_steer(dpo_cfg, model, pairs, processor.pad_token_id, progress=progress, mesh=mesh, preset=preset,
                       pair_ids=pair_ids)
  values = steer_lib.get_steer(model) * float(dpo_cfg.get("post_scale", 1.0))
  steer_lib.set_steer(model, np.zeros_like(values))
  return Adapter(task, values, hint, {**stats, "dpo_s": result["seconds"], "history": result["history"],
                                      "steer_norm": float(np.linalg.norm(values))})


def update_hints(questions, positions=(5,), *, seed: int = 0, max_hint: int = 5) -> list[tuple[int, list[str]]]:
  """The update schedule of one task's questions (arrival order; the official positions 10 / 30 / 50): per
  position u < len(questions), (u, the hint: up to max_hint question texts sampled from the first u, as the
  official schedule samples them; the first u themselves when u <= max_hint)."""
  rng = np.random.default_rng(seed)
  hints = []
  for u in sorted(positions):
    if u < 1 or u >= len(questions):
      continue
    picks = range(u) if u <= max_hint else sorted(rng.choice(u, max_hint, replace=False).tolist())
    hints.append((u, [questions[i].text for i in picks]))
  return hints

