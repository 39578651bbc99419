"""Streaming evaluation of a benchmark (benchmarks.Benchmark): memorise each stream clip by clip, ask each
question after its time, answer from memory only, score Acc / Cov / Prec per task and overall.

Resumable, nothing recomputed: each stream's memory is saved (atomically) after every clip to
workdir/memories/<tag>/<stream>.json, and a rerun continues from the next clip; each answer is appended
to workdir/answers.jsonl as soon as it is made, and a rerun skips the questions already there. A stream
that fails (a missing or unreadable video) is recorded in workdir/errors.jsonl and counted; the run goes
on. With Phase-Two adapters (a task -> Adapter-like dict of steer values + hint), a task's questions are
answered from the memory written with that task's steer and hint (memory tag = the task); other tasks use
the plain memory (tag "base"). How an adapter's memory is written (`deploy`):
- "regenerate", the official pipeline (taskmem-spec.md §3.5): the memory is regenerated per task type, the
  whole stream written with the adapter;
- "causal", as a deployed agent could: the adapter writes from the clip after the question whose arrival
  triggered its update (in the stream of that question; from clip 0 in later streams); the clips before keep
  the memory in use until then (the task's previous adapter, or the plain memory). SynthWorld's Phase-Two
  experiment (envs/synthworld/phase_two.py), a long stream with an update mid-stream, runs this way.
Both go through `write_memory`, the one place an adapter's memory is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable

import numpy as np
from tqdm import tqdm

from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.benchmarks.base import Benchmark, Question, Stream
from taskmem_jax.benchmarks.overlay import load_overlays, render_window, window_identities
from taskmem_jax.eval.answer_context import egolife_context
from taskmem_jax.eval.metrics import score
from taskmem_jax.io import atomic_write_text, safe_filename
from taskmem_jax.memory.identities import to_global, to_local, window_ids
from taskmem_jax.memory.loop import RolloutConfig, memorize_stream
from taskmem_jax.memory.memorise import ClipStream, memorise
from taskmem_jax.memory.prompt import window_video_item
from taskmem_jax.memory.store import EpisodicMemory, schedule
from taskmem_jax.processing.video import VideoClip, read_video, video_duration


@dataclasses.dataclass
class StreamingConfig:
  """How memories are written. Sampling: greedy by default (temperature 0); OFFICIAL_SAMPLING is the official
  pipeline's (T 0.6, top-p 0.95, top-k 20), each window drawn with seed + its step. The settings are written
  beside the memories (memories/<tag>.sampling.json)."""
  interval: int = 10
  context: int = 50
  max_new_tokens: int = 1024
  memory_budget: int | None = None
  temperature: float = 0.0
  top_p: float | None = None
  top_k: int | None = None
  seed: int = 0


OFFICIAL_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}


def window_clips(stream: Stream) -> Callable:
  """window -> VideoClip of the window in stream time, read from every file it overlaps and concatenated
  (windows may cross EgoLife's 30-s files), or None when no file covers it; frame_indices / source_fps is
  stream time."""
  durations = [video_duration(s.path) for s in stream.segments]

  def clip(window):
    parts = []  # (the file's clip, the file's start in stream time)
    for seg, length in zip(stream.segments, durations):
      a, b = max(window.start, seg.start), min(window.end, seg.start + length)
      if b > a:
        parts.append((read_video(seg.path, start=a - seg.start, end=b - seg.start), seg.start))
    if not parts:
      return None  # a gap between recording sessions (EgoLife days keep them)
    fps = parts[0][0].source_fps
    frames = np.concatenate([c.frames for c, _ in parts])
    indices = np.concatenate([c.frame_indices + round(start * fps) for c, start in parts])
    return VideoClip(frames, indices, fps, window.start, window.end, int(round(window.start * fps)))

  return clip


def window_preparer(stream: Stream) -> Callable:
  """memorize_stream's prepare hook for a stream: the window's video item, and, when the stream has
  subtitles or face tracks, the paper's perception rendering (taskmem-spec.md §1.2): identities seen,
  speaking or named by the previous memories are renumbered <face_1>..<face_K> for this window
  (memory.identities.window_ids), boxes and `<face_k>: text` subtitles are burned into the frames, the
  previous memories are shown with local ids and the new memory is stored with global [face_N] ids."""
  if not stream.subtitles and not stream.tracks:
    if len(stream.segments) == 1:
      path, offset = stream.segments[0].path, stream.segments[0].start
      return lambda w, previous: (window_video_item(path, w.start - offset, w.end - offset), previous, None)
    clips = window_clips(stream)

    def plain(window, previous):
      clip = clips(window)
      return None if clip is None else ({"type": "video", "video": clip}, previous, None)

    return plain
  subtitles, tracks = load_overlays(stream.subtitles, stream.tracks)
  clips = window_clips(stream)

  def prepare(window, previous):
    clip = clips(window)
    if clip is None:
      return None
    mapping = window_ids(*window_identities(clip, subtitles=subtitles, tracks=tracks), previous)
    clip = render_window(clip, subtitles=subtitles, tracks=tracks, local_ids=mapping)
    return ({"type": "video", "video": clip}, [to_local(p, mapping) for p in previous],
            lambda description: to_global(description, mapping))

  return prepare


def plain_clips(stream: Stream, interval: int = 10) -> ClipStream | None:
  """The scan's source for a stream of one file and no overlays: its whole clips, read from the file. None for
  other streams (overlays renumber identities per window; several files may leave gaps): the window loop
  writes those. A final partial clip is left to the loop too (its grid differs)."""
  if stream.subtitles or stream.tracks or len(stream.segments) != 1 or stream.segments[0].start != 0:
    return None
  path = stream.segments[0].path
  whole = int(math.floor(stream_duration(stream) / interval + 1e-9))
  return ClipStream(whole, lambda k: window_video_item(path, k * interval, (k + 1) * interval))


def stream_duration(stream: Stream) -> float:
  if stream.duration is not None:
    return float(stream.duration)
  last = stream.segments[-1]
  return last.start + video_duration(last.path)


def memory_at(memory: EpisodicMemory, seconds: float) -> EpisodicMemory:
  """The memories of clips that had ended by `seconds` (all of them for an infinite time)."""
  if math.isinf(seconds):
    return memory
  return EpisodicMemory(memory.interval, {c: d for c, d in memory.items() if (c + 1) * memory.interval <= seconds + 1e-9})


def describe(context) -> list[str]:
  """What an answer was given, for answers.jsonl: the official EgoLife context's segment headings, or the
  clips of a memory ("clips 0-11 (12)")."""
  if hasattr(context, "headings"):
    return context.headings()
  clips = sorted(c for c, _ in context.items())
  return [f"clips {clips[0]}-{clips[-1]} ({len(clips)})"] if clips else ["no memory"]


class StreamingEvaluation:
  """Runs one benchmark into workdir; see the module docstring.

  policy: (model, processor, prompt) writing memories (prompt: its memory.prompt.WindowPrompt); answer_mc(question, memory) -> letter / None and
  answer_free(question, memory) -> answer text / None (question: a benchmarks.Question);
  grade(question_text, reference, prediction) -> (correct, score) for free-form questions. adapters: task -> object with .values (steer [n, H]) and .hint (list of str), used
  with adapters.steer.set_steer (the model must have the steer added). update_after: a task's first
  update_after questions (benchmark order) are answered from the plain memory, the later ones from the
  adapter's (the Phase-Two schedule; 0 = every question of an adapted task). A schedule of updates (the
  official 10 / 30 / 50) keys its adapters "task@N": question i of the task (from 0) is answered from the memory
  of the adapter with the largest N <= i (memory_tag). egolife_context: what an EgoLife question is answered
  from: "official" (eval/answer_context.py: its CURRENT minute and its TARGET minutes, on any earlier day) or
  "day" (that day's memory up to the question). deploy: "regenerate" (official) or "causal" (module docstring).
  clips(stream, interval) -> memory.memorise.ClipStream or None: the stream's whole clips for the jitted window
  scan (memory.memorise), plain_clips by default; the windows it does not cover (None: all of them; a final
  partial clip) go through the window loop with preparer(stream) -> its prepare hook (window -> video item,
  ...), window_preparer (the stream's files, overlays rendered) by default.
  """

  def __init__(self, benchmark: Benchmark, workdir: str, policy, answer_mc: Callable | None = None,
               answer_free: Callable | None = None, grade: Callable | None = None, cfg: StreamingConfig | None = None,
               adapters: dict | None = None, update_after: int = 0, egolife_context: str = "official",
               deploy: str = "regenerate", preparer: Callable = window_preparer, clips: Callable = plain_clips):
    if egolife_context not in ("official", "day"):
      raise ValueError(f"egolife_context={egolife_context!r}: expected 'official' or 'day'")
    if deploy not in ("regenerate", "causal"):
      raise ValueError(f"deploy={deploy!r}: expected 'regenerate' (official) or 'causal'")
    self.deploy, self.preparer, self.clips = deploy, preparer, clips
    self.egolife_context = egolife_context
    self.benchmark, self.workdir = benchmark, workdir
    if len(policy) != 3:
      raise ValueError(f"policy: expected (model, processor, window prompt), got {len(policy)} items")
    self.model, self.processor, self.prompt = policy
    self.answer_mc, self.answer_free, self.grade = answer_mc, answer_free, grade
    self.cfg = cfg or StreamingConfig()
    self.adapters = adapters or {}
    self.update_after = update_after
    self.task_index = {}  # qid -> its index among its task's questions, in benchmark order
    self.task_questions: dict[str, list[tuple[int, Question]]] = {}  # task -> (stream index, question), in order
    self.stream_index = {stream.sid: k for k, stream in enumerate(benchmark.streams)}
    for k, stream in enumerate(benchmark.streams):
      for q in stream.questions:
        asked = self.task_questions.setdefault(q.task, [])
        self.task_index[q.qid] = len(asked)
        asked.append((k, q))
    os.makedirs(workdir, exist_ok=True)
    self.answers_path = os.path.join(workdir, "answers.jsonl")
    self.errors_path = os.path.join(workdir, "errors.jsonl")

  # --- memory --------------------------------------------------------------------------------------

  def _context(self, stream: Stream, q: Question, tag: str, memory: EpisodicMemory, seconds: float):
    """What q is answered from: the memory up to the question, or EgoLife's official context."""
    if self.benchmark.name != "egolife" or self.egolife_context != "official" or "query_day" not in q.meta:
      return memory_at(memory, seconds)
    person = stream.meta.get("person")
    days = {s.meta.get("day"): s for s in self.benchmark.streams if s.meta.get("person") == person}

    def memory_of_day(day):
      if day == stream.meta.get("day"):
        return memory
      return self.memory(days[day], tag) if day in days else None

    return egolife_context(q, memory_of_day)

  def memory_tag(self, q: Question) -> str:
    """Which memory answers q: "task@N" for the scheduled adapter with the largest N <= q's index among its
    task's questions; else the task's single adapter once update_after of its questions were asked; else the
    plain memory, "base"."""
    index = self.task_index[q.qid]
    ready = [key for key in self.adapters if self.task_of(key) == q.task and self.update_bound(key) <= index]
    return max(ready, key=self.update_bound) if ready else "base"

  @staticmethod
  def _split(tag: str) -> tuple[str, int | None]:
    """"task@N" -> (task, N); "task" -> (task, None)."""
    task, at, bound = tag.rpartition("@")
    return (task, int(bound)) if at and bound.isdigit() else (tag, None)

  def update_bound(self, tag: str) -> int:
    """How many of its task's questions an adapter was made from: N for "task@N", update_after for "task"."""
    bound = self._split(tag)[1]
    return self.update_after if bound is None else bound

  def previous_tag(self, tag: str) -> str:
    """The memory in use before the adapter `tag` took over: the same task's adapter of the largest smaller
    bound, else the plain memory."""
    task, bound = self.task_of(tag), self.update_bound(tag)
    earlier = [key for key in self.adapters if self.task_of(key) == task and self.update_bound(key) < bound]
    return max(earlier, key=self.update_bound) if earlier else "base"

  def task_of(self, tag: str) -> str:
    return self._split(tag)[0]

  def adapter_start(self, stream: Stream, tag: str) -> int:
    """The first clip of `stream` the adapter `tag` writes when deployed causally: the clip after the one its
    update question (the task's bound-th) waited for, in that question's stream; 0 in later streams; past the
    end (none) in earlier ones. 0 when no question triggered it (bound 0)."""
    bound = self.update_bound(tag)
    if bound < 1:
      return 0
    k, q = self.task_questions[self.task_of(tag)][bound - 1]
    here = self.stream_index[stream.sid]
    if here != k:
      return 0 if here > k else math.inf
    return self._clips_ended_by(q.ask_after)

  def _clips_ended_by(self, seconds: float) -> int:
    """How many clips had ended `seconds` into a stream."""
    return int(math.floor(seconds / self.cfg.interval + 1e-9))

  def serves(self, tag: str) -> bool:
    """Whether, deployed causally, the adapter `tag` writes a clip that one of its task's later questions reads
    (one asked after the adapter took over and a clip ended); regenerated, it always does."""
    if self.deploy == "regenerate":
      return True
    for k, q in self.task_questions.get(self.task_of(tag), [])[self.update_bound(tag):]:
      stream = self.benchmark.streams[k]
      ends = q.ask_after >= stream_duration(stream) - 1e-6  # asked at the end: the whole memory
      read = math.inf if ends else self._clips_ended_by(q.ask_after)  # the clips before it
      if self.adapter_start(stream, tag) < read:
        return True
    return False

  def rollout_config(self) -> RolloutConfig:
    """The memory writer's settings (greedy unless the config samples)."""
    c = self.cfg
    sampled = c.temperature > 0
    return RolloutConfig(max_new_tokens=c.max_new_tokens, memory_budget=c.memory_budget, temperature=c.temperature,
                         top_p=c.top_p if sampled else None, top_k=c.top_k if sampled else None, seed=c.seed,
                         interval=c.interval, context=c.context)

  def memory(self, stream: Stream, tag: str) -> EpisodicMemory:
    """The stream's memory under `tag` ("base" or an adapter's key), as `deploy` says it is written."""
    if tag == "base":
      return self.write_memory(stream, tag, None)
    adapter = self.adapters[tag]
    if self.deploy == "regenerate":
      return self.write_memory(stream, tag, adapter)
    start = self.adapter_start(stream, tag)
    return self.write_memory(stream, tag, adapter, start=start, under=self.previous_tag(tag) if start else None)

  def write_memory(self, stream: Stream, tag: str, adapter, *, start: float = 0, under: str | None = None
                   ) -> EpisodicMemory:
    """The stream's memory saved under `tag`: the memory under `under` for the clips before `start` (none when
    under is None), then the clips from `start` on written with `adapter` (its steer values and hint; None: the
    plain policy). Continued from disk: after every window the memory and the next window to write are saved
    (a window whose response did not parse leaves no memory, and is not redone)."""
    path = os.path.join(self.workdir, "memories", tag, f"{safe_filename(stream.sid)}.json")
    done_path, next_path = path + ".done", path + ".next"
    if os.path.exists(path):
      memory = EpisodicMemory.load(path)
    elif under is not None:
      memory = EpisodicMemory(self.cfg.interval, {c: d for c, d in self.memory(stream, under).items() if c < start})
    else:
      memory = EpisodicMemory(self.cfg.interval)
    if os.path.exists(done_path):
      return memory
    first = int(open(next_path).read()) if os.path.exists(next_path) else (
        max(max(memory.clips(), default=-1) + 1, start) if math.isfinite(start) else None)
    rollout = self.rollout_config()
    sampling_path = os.path.join(self.workdir, "memories", f"{tag}.sampling.json")
    if not os.path.exists(sampling_path):
      os.makedirs(os.path.dirname(sampling_path), exist_ok=True)
      atomic_write_text(sampling_path, json.dumps({k: getattr(rollout, k) for k in
                                                   ("temperature", "top_p", "top_k", "seed")}))

    def saved(clip):
      memory.save(path)
      atomic_write_text(next_path, str(clip + 1))

    if first is not None:  # None: the adapter starts after the stream's end, nothing to write
      duration = stream_duration(stream)
      hint = list(adapter.hint) if adapter is not None else None
      source = self.clips(stream, self.cfg.interval)
      if source is not None and first < source.num_clips:
        memorise(self.model, self.processor, [source], rollout.sampling(), prompt=self.prompt, hint=hint,
                 steer=None if adapter is None else adapter.values, seed=rollout.seed, memories=[memory],
                 first_clip=first, interval=self.cfg.interval, on_clip=lambda row, clip, _: saved(clip))
        first = source.num_clips
      if first < len(schedule(duration, self.cfg.interval, self.cfg.context)):  # windows left to the loop
        if adapter is not None:
          steer_lib.set_steer(self.model, adapter.values)
        try:
          memorize_stream(self.model, self.processor, None, duration, rollout, prompt=self.prompt,
                          task_questions=hint, memory=memory, first_clip=first, prepare=self.preparer(stream),
                          on_step=lambda record: saved(record.window.clip))
        finally:
          if adapter is not None:
            steer_lib.set_steer(self.model, np.zeros_like(adapter.values))
    memory.save(path)
    atomic_write_text(done_path, "")
    return memory

  # --- answers -------------------------------------------------------------------------------------

  def _done(self) -> dict[str, dict]:
    if not os.path.exists(self.answers_path):
      return {}
    with open(self.answers_path, encoding="utf-8") as f:
      rows = [json.loads(line) for line in f if line.strip()]
    return {r["qid"]: r for r in rows}

  def _append(self, path: str, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
      f.flush()
      os.fsync(f.fileno())

  def _answer(self, q: Question, memory: EpisodicMemory) -> dict:
    if q.multiple_choice:
      predicted = self.answer_mc(q, memory)
      return {"predicted": predicted, "correct": q.answer, "answered": predicted is not None}
    prediction = self.answer_free(q, memory)
    if prediction is None:
      return {"predicted": None, "correct": "Y", "answered": False, "prediction": None}
    ok, points = self.grade(q.text, q.answer, prediction)
    return {"predicted": "Y" if ok else "N", "correct": "Y", "answered": True, "prediction": prediction,
            "score": points}

  def run(self, progress: bool = True) -> dict:
    """Memorises and answers everything not yet done; returns the scores (also in workdir/scores.json)."""
    done = self._done()
    tic = time.perf_counter()
    bar = tqdm(self.benchmark.streams, desc=f"{self.benchmark.name}", unit="stream", disable=not progress)
    for stream in bar:
      todo = [q for q in stream.questions if q.qid not in done]
      if not todo:
        continue
      try:
        memories = {}
        duration = stream_duration(stream)
        for q in todo:
          tag = self.memory_tag(q)
          if tag not in memories:
            memories[tag] = self.memory(stream, tag)
          # Asked at (or after) the end: the whole memory, the final partial clip included.
          seconds = q.ask_after if q.ask_after < duration - 1e-6 else float("inf")
          context = self._context(stream, q, tag, memories[tag], seconds)
          row = {"qid": q.qid, "stream": stream.sid, "task": q.task, "memory": tag, "context": describe(context),
                 **self._answer(q, context)}
          self._append(self.answers_path, row)
          done[q.qid] = row
      except Exception as e:  # a bad stream is recorded and counted; the others go on
        self._append(self.errors_path, {"stream": stream.sid, "error": f"{type(e).__name__}: {e}"})
    scores = score((r["task"], r["predicted"], r["correct"]) for r in done.values())
    scores["errors"] = {"load": len(self.benchmark.errors), "streams": _count_lines(self.errors_path)}
    scores["seconds"] = time.perf_counter() - tic
    atomic_write_text(os.path.join(self.workdir, "scores.json"), json.dumps(scores, indent=2) + "\n")
    return scores


def _count_lines(path: str) -> int:
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())
