"""The reference streaming rollout, a plain Python loop over the schedule, as the official pipeline runs.

For every step of ``store.schedule``: build the window prompt (previous memories of the window's
clips, the window's video, optional task questions), sample num_samples responses with
``sampling.generate``, parse them strictly, and store the first valid one as the new clip's memory.
Every response and its parse are kept, so RL can score them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from taskmem_jax.memory.parse import ParseResult, parse_response
from taskmem_jax.memory.prompt import WindowPrompt, window_messages, window_video_item
from taskmem_jax.memory.store import EpisodicMemory, Window, schedule
from taskmem_jax.processing.processor import Qwen3VLProcessor
from taskmem_jax.sampling import generate


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


@dataclasses.dataclass
class StepRecord:
  """One window: the prompt's previous memories, and per sample its tokens [T], text and parse."""
  window: Window
  previous: list[str]
  tokens: list[np.ndarray]
  texts: list[str]
  parses: list[ParseResult]


class Sample(NamedTuple):
  """One sampled response: ids with the stop token (what training scores), ids without it (the memory
  span the format check measures), the decoded text, and its strict parse."""
  response: np.ndarray
  body: np.ndarray
  text: str
  parse: ParseResult


def parse_samples(processor: Qwen3VLProcessor, out, *, max_memory_tokens: int | None = None) -> list[Sample]:
  """generate()'s rows -> one Sample each: cut at the row's length, the stop token dropped from the body,
  decoded without skipping special tokens, and parsed strictly (parse_response with the token ids)."""
  tokenizer = processor.tokenizer
  think_end = tokenizer.convert_tokens_to_ids("</think>")
  stops = processor.stop_token_ids
  samples = []
  for row, length in zip(out.tokens, out.lengths):
    response = np.asarray(row[:length], np.int32)
    body = response[:-1] if len(response) and response[-1] in stops else response
    text = tokenizer.decode(body.tolist(), skip_special_tokens=False)
    samples.append(Sample(response, body, text, parse_response(text, tokens=body.tolist(), think_end_id=think_end,
                                                               max_memory_tokens=max_memory_tokens)))
  return samples


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
  tokenizer = processor.tokenizer
  think_end = tokenizer.convert_tokens_to_ids("</think>")
  stops = processor.stop_token_ids
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
    messages = window_messages(item, shown, task_questions, prompt=prompt)
    batch = processor([messages], thinking=True)
    out = generate(model, batch, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                   top_p=cfg.top_p, num_samples=cfg.num_samples, seed=cfg.seed + step, stop_token_ids=stops,
                   pad_token_id=processor.pad_token_id, thinking_budget=cfg.thinking_budget,
                   think_end_token_id=think_end, memory_budget=cfg.memory_budget)
    record = StepRecord(window, previous, [], [], [])
    for sample in parse_samples(processor, out, max_memory_tokens=cfg.memory_budget):
      record.tokens.append(sample.body)
      record.texts.append(sample.text)
      record.parses.append(sample.parse)
    chosen = next((p for p in record.parses if p.ok), None)
    if chosen is not None:
      memory.add(window.clip, to_memory(chosen.description) if to_memory else chosen.description)
    records.append(record)
    if on_step is not None:
      on_step(record)
  return memory, records
