"""One window, G samples: the window sampler that memorising, Phase One and Phase Two's pair mining share.

``sample_window`` renders a window's prompt (its video, the previous memories as shown, optional task
questions), samples G responses with ``sampling.generate`` and parses each strictly. What the callers do
with the samples differs: memorising stores the first valid memory (memory/loop.py), Phase One scores the
group (rl/trainer.py), Phase Two compares the samples under a task (phase_two/mining.py).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from taskmem_jax.memory.parse import ParseResult, parse_response
from taskmem_jax.memory.prompt import WindowPrompt, window_messages
from taskmem_jax.processing.processor import Qwen3VLProcessor
from taskmem_jax.sampling import generate


@dataclasses.dataclass(frozen=True)
class WindowSampling:
  """How a window's responses are drawn. memory_budget (tokens from </think> on, the paper's L_mem) and
  thinking_budget are enforced while decoding; parse_budget is the memory's token limit of the strict parse
  (None: none)."""
  num_samples: int = 1
  max_new_tokens: int = 256
  temperature: float = 0.0
  top_k: int | None = None
  top_p: float | None = None
  thinking_budget: int | None = None
  memory_budget: int | None = None
  parse_budget: int | None = None


class Sample(NamedTuple):
  """One sampled response: ids with the stop token (what training scores), ids without it (the memory
  span the format check measures), the decoded text, and its strict parse."""
  response: np.ndarray
  body: np.ndarray
  text: str
  parse: ParseResult


class WindowSamples(NamedTuple):
  """A window's prompt as the policy saw it and its samples: prompt_ids [L] (the real tokens), the video's
  pixel values [N, C*T*P*P] and grid [1, 3] (None for a window without video), and G Samples."""
  prompt_ids: np.ndarray
  pixels: np.ndarray | None
  grid: np.ndarray | None
  samples: list[Sample]

  @property
  def responses(self) -> list[np.ndarray]:
    return [x.response for x in self.samples]

  @property
  def bodies(self) -> list[np.ndarray]:
    return [x.body for x in self.samples]

  @property
  def texts(self) -> list[str]:
    return [x.text for x in self.samples]

  @property
  def parses(self) -> list[ParseResult]:
    return [x.parse for x in self.samples]


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


def sample_window(model, processor: Qwen3VLProcessor, item: dict, previous: list[str], sampling: WindowSampling,
                  seed: int, *, prompt: WindowPrompt, questions: Sequence[str] | None = None) -> WindowSamples:
  """Samples sampling.num_samples responses to one window.

  item: the processor's video item of the window; previous: the memories the prompt shows (oldest first);
  prompt: the policy's window prompt (memory.prompt.read_window_prompt); questions: task questions the
  prompt carries (Phase Two's hint), or None.
  """
  batch = processor([window_messages(item, previous, list(questions) if questions else None, prompt=prompt)],
                    thinking=True)
  out = generate(model, batch, max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                 top_k=sampling.top_k, top_p=sampling.top_p, num_samples=sampling.num_samples, seed=seed,
                 stop_token_ids=processor.stop_token_ids, pad_token_id=processor.pad_token_id,
                 thinking_budget=sampling.thinking_budget,
                 think_end_token_id=processor.tokenizer.convert_tokens_to_ids("</think>"),
                 memory_budget=sampling.memory_budget)
  prompt_ids = batch["input_ids"][0][batch["attention_mask"][0] > 0]
  return WindowSamples(prompt_ids, batch.get("pixel_values_videos"), batch.get("video_grid_thw"),
                       parse_samples(processor, out, max_memory_tokens=sampling.parse_budget))
