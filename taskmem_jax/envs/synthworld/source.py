"""SynthWorld as Phase One's and Phase Two's source of windows (the interface rl/streams.py describes):
video k is the stream generate(seed_base + k, world), its windows rendered in memory, the teacher's memories
as the off-policy history, and the judge's WindowContext carrying the ground-truth stream."""

from __future__ import annotations

import functools

import numpy as np

from taskmem_jax.envs.synthworld.teacher import teacher_episodic_memory
from taskmem_jax.envs.synthworld.video import render_clip
from taskmem_jax.envs.synthworld.world import generate
from taskmem_jax.memory.store import EpisodicMemory, Window, schedule
from taskmem_jax.rewards.judge import WindowContext


class SynthWorldSource:
  """SynthWorld videos for the slots: video k is generate(seed_base + k, world)."""

  def __init__(self, world, *, seed_base: int = 0, teacher_budget: int = 40, teacher_seed: int = 0, cache: int = 64):
    self.world, self.seed_base = world, seed_base
    self.teacher_budget, self.teacher_seed = teacher_budget, teacher_seed
    self.stream = functools.lru_cache(maxsize=cache)(self._stream)
    self.teacher = functools.lru_cache(maxsize=cache)(self._teacher_memory)

  def _stream(self, video: int):
    return generate(self.seed_base + video, self.world)

  def _teacher_memory(self, video: int) -> EpisodicMemory:
    rng = np.random.default_rng([self.teacher_seed, self.seed_base + video])
    return teacher_episodic_memory(self.stream(video), budget_tokens=self.teacher_budget, rng=rng)

  def num_clips(self, video: int) -> int:
    return self.world.num_clips

  def window(self, video: int, clip: int) -> Window:
    windows = schedule(self.stream(video).duration)
    return windows[clip]

  def video_item(self, video: int, clip: int) -> dict:
    """The processor's video item for the window that ends with `clip` (frames rendered in memory)."""
    w = self.window(video, clip)
    return {"type": "video", "video": render_clip(self.stream(video), w.start, w.end)}

  def context(self, video: int, clip: int, previous: list[str], video_item: dict | None = None) -> WindowContext:
    w = self.window(video, clip)
    frames = video_item["video"] if video_item is not None else None
    return WindowContext(clip=clip, start=w.start, end=w.end, previous=tuple(previous), video=frames,
                         stream=self.stream(video))
