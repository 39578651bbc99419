"""Phase Two on a benchmark as it streams: each task's adapter is trained from its first questions.

The paper's protocol (taskmem-spec.md §3.5): a task type's first questions are answered from the plain
Phase-One memory; then an adapter is trained with those questions as the task hint and the memory for
the task's later questions is written with it. The training windows come from the streams of those first
questions only (`BenchmarkSource`), their history is the policy's plain memory of that stream, and the judges
are the ones given (an OpenAI-compatible server or a local checkpoint; there is no ground truth).
Adapters are saved to workdir/adapters/<task>.safetensors (a schedule: <task>@<N>.safetensors) as they are
made, and a rerun loads them.
"""

from __future__ import annotations

import json
import os

import numpy as np

from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.eval.streaming import stream_duration, window_preparer
from taskmem_jax.io import atomic_write_json, safe_filename
from taskmem_jax.memory.store import schedule
from taskmem_jax.phase_two.adapt import Adapter, train_adapter, update_hints
from taskmem_jax.rewards import FACE_TAGS, SYNTHWORLD_TAGS
from taskmem_jax.rewards.judge import WindowContext


class BenchmarkSource:
  """Training windows over the evaluation's streams (video k = stream k mod their number); the history
  of a window is the policy's plain ("base") memory of that stream, written (or loaded) on demand."""

  def __init__(self, evaluation, streams):
    self.evaluation, self.streams = evaluation, list(streams)
    self._windows = [schedule(stream_duration(s), evaluation.cfg.interval, evaluation.cfg.context)
                     for s in self.streams]
    self._prepare = [window_preparer(s) for s in self.streams]

  def _k(self, video: int) -> int:
    return video % len(self.streams)

  def num_clips(self, video: int) -> int:
    return len(self._windows[self._k(video)])

  def prepare(self, video: int, clip: int, previous: list[str]):
    """(video item, the previous memories in this window's local face ids, local -> global) as evaluation
    prepares the window (eval/streaming.window_preparer: tags burned into the frames, ids renumbered), or None
    when no video covers it."""
    return self._prepare[self._k(video)](self._windows[self._k(video)][clip], list(previous))

  def video_item(self, video: int, clip: int) -> dict | None:
    prepared = self.prepare(video, clip, [])
    return None if prepared is None else prepared[0]

  def teacher(self, video: int):
    return self.evaluation.memory(self.streams[self._k(video)], "base")

  def context(self, video: int, clip: int, previous, item=None) -> WindowContext:
    k = self._k(video)
    w = self._windows[k]
    video_path = item["video"] if item and isinstance(item.get("video"), str) else None
    frames = item["video"] if item and not isinstance(item.get("video"), str) else None
    return WindowContext(clip=clip, start=w[clip].start, end=w[clip].end, previous=tuple(previous), video=frames,
                         video_path=video_path)


def adapt_benchmark(evaluation, quality_judge, task_judge, reward, cache_cfg, dpo_cfg, *, update_after: int = 5,
                    update_positions: tuple[int, ...] | None = None, num_contexts: int = 16, seed: int = 0,
                    tasks: list[str] | None = None, source=None, mesh=None, preset: str = "fsdp",
                    progress=print) -> dict[str, Adapter]:
  """Trains (or loads) one adapter per task that has more than update_after questions; returns task -> Adapter.
  update_positions (the official schedule 10, 30, 50): one adapter per task and position N the task has more
  than N questions of, made from its first N questions, keyed (and saved as) "task@N"; the evaluation answers
  question i from the largest N <= i (StreamingEvaluation.memory_tag). The evaluation's model must have a
  steer (adapters.steer.add_steer). tasks: which to adapt, in this order (default: every task, sorted).
  source: the training windows of every adapter (a world with training streams, as SynthWorld's) instead of
  the windows of the streams already asked (BenchmarkSource). mesh, preset: DPO's placement (train_adapter).
  Adapter k of the plan (over tasks, then positions) trains with seed * 1000 + k; its steer and stats are
  saved as it is made (adapters/<key>.safetensors and .json)."""
  model, processor = evaluation.model, evaluation.processor
  # The quality check's identity-tag rule, as evaluation renders the windows.
  tags = SYNTHWORLD_TAGS if evaluation.benchmark.name == "synthworld" else FACE_TAGS
  streams = evaluation.benchmark.streams
  by_task = {task: [(streams[k], q) for k, q in asked] for task, asked in evaluation.task_questions.items()}
  adapters = {}
  # The schedule and its hints (up to 5 questions sampled from the first `bound`) as phase_two.adapt plans them.
  jobs = [(task, asked, bound, hint, f"{task}@{bound}" if update_positions else task)
          for task, asked in ((t, by_task[t]) for t in (sorted(by_task) if tasks is None else tasks) if t in by_task)
          for bound, hint in update_hints([q for _, q in asked], update_positions or (update_after,), seed=seed)]
  # Deployed causally, an adapter that would take over after its task's last question reads memory is not made.
  jobs = [job for job in jobs if evaluation.serves(job[4])]
  for k, (task, asked, bound, hint, key) in enumerate(jobs):
    # The training windows come only from the videos of the questions already asked (the official cache:
    # the task's first `bound` questions), so no video of a later, evaluated question is trained on.
    seen = list({id(stream): stream for stream, _ in asked[:bound]}.values())
    path = os.path.join(evaluation.workdir, "adapters", f"{safe_filename(key, keep='-_.@')}.safetensors")
    stats_path = path[:-len(".safetensors")] + ".json"
    if os.path.exists(path):
      meta = steer_lib.load(model, path)
      stats = json.load(open(stats_path)) if os.path.exists(stats_path) else {}
      adapters[key] = Adapter(task, steer_lib.get_steer(model), [h for h in meta.get("hint", "").split(" | ") if h],
                              stats)
      steer_lib.set_steer(model, np.zeros_like(adapters[key].values))
      continue
    adapter = train_adapter(model, processor, task, hint, source or BenchmarkSource(evaluation, seen), quality_judge,
                            task_judge, reward, cache_cfg, dpo_cfg, prompt=evaluation.prompt,
                            num_contexts=num_contexts, seed=seed * 1000 + k, tags=tags, mesh=mesh, preset=preset)
    steer_lib.set_steer(model, adapter.values)
    atomic_write_json(stats_path, adapter.stats, default=float)
    steer_lib.save(model, path, metadata={"task": key, "hint": " | ".join(hint), "pairs": adapter.stats["pairs"]})
    steer_lib.set_steer(model, np.zeros_like(adapter.values))
    adapters[key] = adapter
    if progress:
      progress(f"{key}: adapter from {adapter.stats['pairs']} pairs of {num_contexts} windows")
  return adapters
