"""Where Phase One's windows come from: B parallel streams and the history each window shows.

The official data (taskmem-spec.md §2.3, TaskMem training/stage1/simulate_ep_data.py) runs B streams in
parallel. Every step each stream advances one clip; once a stream is deeper than n_min clips it is
replaced by a fresh video with probability p per step, and always once deeper than n_max (the official
`step > 22`: a stream shows at most n_max + 1 = 23 clips). A stream starts at its video's start clip (the
official records' start_time // 10; 0 for SynthWorld), and its depth counts from there. The previous
memories a window shows come from the teacher in the off-policy stage and from the policy's own earlier
outputs in the on-policy stage (the first response of the group that parsed, as the official reward
manager writes history/<video>.json).

`StreamSlots` is that simulator. Its randomness is a pure function of (seed, step), so its state is just
the slots (video id, clip, history), a small JSON dict saved with each checkpoint: a resumed run draws
exactly what the uninterrupted run would have.

A source supplies the videos: num_clips(video), window(video, clip), video_item(video, clip), teacher(video)
(the off-policy history, an EpisodicMemory), context(video, clip, previous, item) (the judge's
WindowContext), optionally start_clip(video) and prepare(video, clip, previous) (the perception rendering).
`VideoFilesSource` reads real videos from a manifest; SynthWorld's is envs/synthworld/source.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import numpy as np

from taskmem_jax.benchmarks.base import Segment, Stream
from taskmem_jax.eval.streaming import window_preparer
from taskmem_jax.memory.prompt import window_video_item
from taskmem_jax.memory.store import DEFAULT_INTERVAL as CLIP_SECONDS
from taskmem_jax.memory.store import EpisodicMemory, Window, schedule
from taskmem_jax.processing.video import video_duration
from taskmem_jax.rewards.judge import WindowContext


@dataclasses.dataclass
class Slot:
  """One parallel stream: which video, which clip comes next, and the memories written so far (one
  EpisodicMemory per population member: the members see the same windows but write their own history)."""
  video: int
  clip: int
  memories: list[EpisodicMemory]
  start: int = 0  # the clip the stream started at

  def to_dict(self) -> dict:
    return {"video": self.video, "clip": self.clip, "start": self.start,
            "memories": [m.to_dict() for m in self.memories]}

  @classmethod
  def from_dict(cls, data: dict) -> Slot:
    return cls(int(data["video"]), int(data["clip"]), [EpisodicMemory.from_dict(m) for m in data["memories"]],
               int(data.get("start", 0)))


class StreamSlots:
  """B streams stepping one clip per training step (see the module docstring).

  num_clips(video) -> clips available in that video (a stream also ends when its video does).
  start_clip(video) -> the clip its stream starts at (default 0).
  """

  def __init__(self, num_streams: int, num_clips, *, n_min: int = 11, n_max: int = 22, p_resample: float = 0.13,
               seed: int = 0, members: int = 1, start_clip=None):
    if num_streams < 1:
      raise ValueError(f"num_streams={num_streams}: need at least one stream")
    if not 0 <= n_min <= n_max or n_max < 1:
      raise ValueError(f"n_min={n_min}, n_max={n_max}: need 0 <= n_min <= n_max and n_max >= 1")
    if not 0.0 <= p_resample <= 1.0:
      raise ValueError(f"p_resample={p_resample}: must be a probability")
    self.num_clips, self.n_min, self.n_max, self.p, self.seed = num_clips, n_min, n_max, p_resample, seed
    self.start_clip = start_clip or (lambda video: 0)
    self.members = members
    self.slots = [self._fresh(b) for b in range(num_streams)]
    self.next_video = num_streams

  def advance(self, step: int) -> None:
    """After training step `step`: every stream moves to its next clip, or to a fresh video."""
    rng = np.random.default_rng([self.seed, step])
    draws = rng.random(len(self.slots))
    for b, slot in enumerate(self.slots):
      depth = slot.clip - slot.start + 1  # clips this stream has shown
      done = depth > self.n_max or slot.clip + 1 >= self.num_clips(slot.video)
      if done or (depth > self.n_min and draws[b] < self.p):
        self.slots[b] = self._fresh(self.next_video)
        self.next_video += 1
      else:
        slot.clip += 1

  def _fresh(self, video: int) -> Slot:
    start = int(self.start_clip(video))
    if not 0 <= start < self.num_clips(video):
      raise ValueError(f"video {video}: start clip {start} outside its {self.num_clips(video)} clips")
    return Slot(video, start, [EpisodicMemory() for _ in range(self.members)], start)

  def state(self) -> dict:
    return {"next_video": self.next_video, "slots": [s.to_dict() for s in self.slots]}

  def restore(self, state: dict) -> None:
    slots = [Slot.from_dict(s) for s in state["slots"]]
    if len(slots) != len(self.slots) or any(len(s.memories) != self.members for s in slots):
      raise ValueError(f"checkpoint has {len(slots)} streams x {len(slots[0].memories) if slots else 0} members, "
                       f"the config asks for {len(self.slots)} x {self.members}")
    self.slots, self.next_video = slots, int(state["next_video"])


class VideoFilesSource:
  """Real videos for the slots, from a JSONL manifest: one {"video": PATH, "memory": PATH, "start_time": S} per
  line.

  "memory" (optional) is the teacher's EpisodicMemory JSON of that video (the paper's Gemini seed
  memories), the off-policy history; without it the off-policy stage shows no previous memories.
  "start_time" (optional, seconds, default 0): where the video's stream starts, as the official records'
  start_time (clip start_time // 10). "subtitles" (an .srt) and "tracks" (face tracks, benchmarks/overlay),
  optional: the perception rendering of evaluation (prepare): tags burned into the frames, and the history
  shown in each window's local <face_k> ids (the official map.json remap), the new memory mapped back to
  global [face_N] ids.
  Relative paths are read from the manifest's folder. Video k of the slots is line k mod the number of
  lines, so streams cycle through the manifest. The judge gets the window's file and span (video_path,
  start, end); there is no ground truth.
  """

  def __init__(self, manifest: str):
    folder = os.path.dirname(os.path.abspath(manifest))
    self.entries, self.overlays, self._preparers = [], [], {}
    with open(manifest, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          entry = json.loads(line)
        except ValueError as e:
          raise ValueError(f"{manifest}:{number}: not JSON ({e})") from e
        if not isinstance(entry, dict) or not isinstance(entry.get("video"), str):
          raise ValueError(f"{manifest}:{number}: expected an object with a string \"video\"")
        video = os.path.join(folder, entry["video"])
        memory = os.path.join(folder, entry["memory"]) if entry.get("memory") else None
        overlays = {k: os.path.join(folder, entry[k]) for k in ("subtitles", "tracks") if entry.get(k)}
        missing = [f"{k}={p}" for k, p in overlays.items() if not os.path.isfile(p)]
        if missing:
          raise ValueError(f"{manifest}:{number}: no such file {missing}")
        start = entry.get("start_time", 0)
        duration = video_duration(video)
        if not isinstance(start, (int, float)) or isinstance(start, bool) or not 0 <= start < duration:
          raise ValueError(f"{manifest}:{number}: start_time={start!r} must be a number of seconds in "
                           f"[0, {duration:g}) (the video's duration)")
        self.entries.append((video, memory, duration, int(start // CLIP_SECONDS)))
        self.overlays.append(overlays)
    if not self.entries:
      raise ValueError(f"{manifest}: no videos listed")
    self.teacher = functools.lru_cache(maxsize=64)(self._teacher)

  def _entry(self, video: int):
    return self.entries[video % len(self.entries)]

  def _teacher(self, video: int) -> EpisodicMemory:
    _, memory, _, _ = self._entry(video)
    return EpisodicMemory.load(memory) if memory else EpisodicMemory()

  def num_clips(self, video: int) -> int:
    return len(schedule(self._entry(video)[2]))

  def start_clip(self, video: int) -> int:
    return min(self._entry(video)[3], self.num_clips(video) - 1)

  def window(self, video: int, clip: int) -> Window:
    return schedule(self._entry(video)[2])[clip]

  def video_item(self, video: int, clip: int) -> dict:
    w = self.window(video, clip)
    return window_video_item(self._entry(video)[0], w.start, w.end)

  def prepare(self, video: int, clip: int, previous: list[str]):
    """(video item, the previous memories as this window shows them, local -> global id map or None): with
    the entry's subtitles / tracks, evaluation's perception rendering (eval/streaming.window_preparer)."""
    k = video % len(self.entries)
    if k not in self._preparers:
      path, _, duration, _ = self.entries[k]
      self._preparers[k] = window_preparer(Stream(str(k), (Segment(path, 0.0),), (), duration=duration,
                                                  subtitles=self.overlays[k].get("subtitles"),
                                                  tracks=self.overlays[k].get("tracks")))
    return self._preparers[k](self.window(video, clip), list(previous))

  def context(self, video: int, clip: int, previous: list[str], video_item: dict | None = None) -> WindowContext:
    w = self.window(video, clip)
    return WindowContext(clip=clip, start=w.start, end=w.end, previous=tuple(previous),
                         video_path=self._entry(video)[0])
