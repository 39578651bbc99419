"""The reference streaming rollout, a plain Python loop over the schedule, as the official pipeline runs.

For every step of ``store.schedule``: build the window prompt (previous memories of the window's
clips, the window's video, optional task questions), sample num_samples responses with
``sampling.generate``, parse them strictly, and store the first valid one as the new clip's memory.
Every response and its parse are kept, so RL can score them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from taskmem_jax.memory.parse import ParseResult
from taskmem_jax.memory.prompt import WindowPrompt, window_video_item
from taskmem_jax.memory.sample import WindowSampling, sample_window
from taskmem_jax.memory.store import EpisodicMemory, Window, schedule
from taskmem_jax.processing.processor import Qwen3VLProcessor


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  max_new_tokens: int = 256       # thinking + memory
  memory_budget: int | None = None  # tokens from </think> on (the paper's L_mem), enforced while decoding
  thinking_budget: int | None = None
  num_samples: int = 1
  temperature: float = 0.0
  top_k: int | None = None
  top_p: float | None = None
  seed: int = 0
  interval: int = 10
  context: int = 50

  def sampling(self) -> WindowSampling:
    """The window sampler's settings; the memory budget also bounds the strict parse."""
    return WindowSampling(self.num_samples, self.max_new_tokens, self.temperature, self.top_k, self.top_p,
                          self.thinking_budget, self.memory_budget, parse_budget=self.memory_budget)


@dataclasses.dataclass
class StepRecord:
  """One window: the prompt's previous memories, and per sample its tokens [T], text and parse."""
  window: Window
  previous: list[str]
  tokens: list[np.ndarray]
  texts: list[str]
  parses: list[ParseResult]


def memorize_stream(model, processor: Qwen3VLProcessor, video_path: str | None, duration: float, cfg: RolloutConfig,
                    *, prompt: WindowPrompt, task_questions: list[str] | None = None,
                    on_step: Callable[[StepRecord], None] | None = None, memory: EpisodicMemory | None = None,
                    first_clip: int = 0, stop_clip: int | None = None,
                    video_item: Callable[[Window], dict] | None = None,
                    prepare: Callable | None = None) -> tuple[EpisodicMemory, list[StepRecord]]:
  """Memorises the stream at video_path clip by clip; returns the memory and one record per window.

  prompt: the window prompt the policy was trained with (memory.prompt.read_window_prompt).
  memory / first_clip / stop_clip: continue an existing memory over windows first_clip .. stop_clip - 1
  (Phase Two switches to a task's adapter mid-stream; the memory is extended in place).
  video_item(window): the processor's video item of a window, instead of reading video_path (e.g. SynthWorld clips rendered in memory).
  prepare(window, previous) -> (video item, previous memories as the prompt shows them, f(description) ->
  what is stored), or None to skip the window: the full hook, for windows whose identities are renumbered (eval/streaming.py burns
  face boxes and subtitles in with local <face_k> ids and maps the memory back to global ids).
  """
  sampling = cfg.sampling()
  memory = EpisodicMemory(interval=cfg.interval) if memory is None else memory
  if video_item is None and prepare is None:
    if video_path is None:
      raise ValueError("memorize_stream: give video_path, video_item or prepare")
    video_item = lambda w: window_video_item(video_path, w.start, w.end)
  records = []
  for step, window in enumerate(schedule(duration, cfg.interval, cfg.context)):
    if window.clip < first_clip or (stop_clip is not None and window.clip >= stop_clip):
      continue
    previous = memory.previous(window.clip)
    to_memory = None
    if prepare is not None:
      prepared = prepare(window, previous)
      if prepared is None:  # no video covers this window (a gap between a stream's files): nothing to write
        continue
      item, shown, to_memory = prepared
    else:
      item, shown = video_item(window), previous
    drawn = sample_window(model, processor, item, shown, sampling, cfg.seed + step, prompt=prompt,
                          questions=task_questions)
    record = StepRecord(window, previous, drawn.bodies, drawn.texts, drawn.parses)
    chosen = next((p for p in record.parses if p.ok), None)
    if chosen is not None:
      memory.add(window.clip, to_memory(chosen.description) if to_memory else chosen.description)
    records.append(record)
    if on_step is not None:
      on_step(record)
  return memory, records
