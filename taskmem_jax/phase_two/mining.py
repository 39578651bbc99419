"""Pair mining: the rollouts of one task's contexts and the preference pairs among them (taskmem-spec.md §3.3;
the official pipeline calls the stored rollouts its "cache", hence CacheConfig and the configs' `cache`).

For every context (a window, its previous memories, and the task hint: up to 5 recent questions of the
task type) the Phase-One policy, steer at zero, samples N memories with the task-hint prompt (draw_contexts:
window by window, or all of an adapter's contexts in one batch). Each is
parsed and quality-checked with the Phase-One judge (faithful, non-redundant, identity tags, a
description length cap): that is its `correct`. All pairs of parsable rollouts, shuffled, go through the
task judge in both orders; the agreed verdicts form the context's preference graph and
phase_two.pairs.select_pair takes at most one (chosen, rejected) pair from it. The official generator
stops a context after 30 consecutive pairs without a usable verdict; so does this one.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Sequence

import numpy as np

from taskmem_jax.memory.prompt import WindowPrompt
from taskmem_jax.memory.memorise import sample_windows
from taskmem_jax.memory.sample import WindowSamples, WindowSampling, sample_window
from taskmem_jax.phase_two.dpo import PairExample
from taskmem_jax.phase_two.pairs import Candidate, select_pair
from taskmem_jax.rewards import RewardConfig, score_group
from taskmem_jax.rewards.task_judge import both_orders


@dataclasses.dataclass(frozen=True)
class CacheConfig:
  """num_samples: N rollouts per context. Sampling as the official rollout (T 0.6, top-p 0.95, top-k 20).
  think_cap / desc_cap: a rollout with longer thinking fails to parse; a description longer than desc_cap
  tokens is not correct (official 6400 / 300). max_misses: consecutive pairs without a usable verdict
  before a context is given up (official 30). judge_chunk: pairs sent to the task judge at once. batched: draw
  every context of an adapter in one batch (sample_windows) instead of window by window; on 2 CPU cores the
  batch is slower (0.69x for 48 contexts, experiments/bench_windows: every row decodes until the batch's longest
  is done, every window fills the full buffer), so it is off by default; it is meant for accelerators."""
  num_samples: int = 8
  temperature: float = 0.6
  top_p: float = 0.95
  top_k: int = 20
  max_new_tokens: int = 96
  think_cap: int = 6400
  desc_cap: int = 300
  max_misses: int = 30
  judge_chunk: int = 8
  seed: int = 0
  batched: bool = False


@dataclasses.dataclass
class ContextResult:
  """What one context produced: the rollouts' texts and flags, the agreed preferences, the chosen pair."""
  texts: list[str]
  correct: list[bool]
  desc_tokens: list[int]
  preferences: list[tuple[int, int]]
  pair: Any  # pairs.Pair or None
  compared: int


def judge_context(questions: Sequence[str], descriptions: Sequence[str], valid: Sequence[int], task_judge,
                  rng: np.random.Generator, cfg: CacheConfig) -> tuple[list[tuple[int, int]], int]:
  """Agreed (winner, loser) index pairs among the valid rollouts, and the number of pairs compared."""
  pairs = list(itertools.combinations(valid, 2))
  pairs = [pairs[i] for i in rng.permutation(len(pairs))]
  preferences, misses, compared = [], 0, 0
  for start in range(0, len(pairs), cfg.judge_chunk):
    chunk = pairs[start:start + cfg.judge_chunk]
    verdicts = both_orders(task_judge, questions, [(descriptions[a], descriptions[b]) for a, b in chunk])
    for (a, b), v in zip(chunk, verdicts):
      compared += 1
      if v.failed:
        misses += 1
        if misses >= cfg.max_misses:
          return preferences, compared
        continue
      misses = 0
      preferences.append((a, b) if v.winner == 0 else (b, a))
  return preferences, compared


def draw_contexts(model, processor, items: Sequence[dict], previous: Sequence[list[str]], questions: Sequence[str],
                  cfg: CacheConfig, seed: int, *, prompt: WindowPrompt, context_ids: Sequence[int]) -> list[WindowSamples]:
  """The N rollouts of every context (the window's video item, the memories it shows) with the task hint.
  Window by window (sample_window, seed * 7919 + context id), or with cfg.batched all in one batch
  (memory.memorise.sample_windows; keys of (seed, context id)). Either way a context's rollouts are the same
  whichever process draws it."""
  sampling = WindowSampling(cfg.num_samples, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
  if cfg.batched:
    return sample_windows(model, processor, items, previous, sampling, seed, prompt=prompt, questions=questions,
                          window_ids=context_ids)
  return [sample_window(model, processor, item, shown, sampling, seed * 7919 + k, prompt=prompt, questions=questions)
          for item, shown, k in zip(items, previous, context_ids)]


def judge_samples(processor, drawn: WindowSamples, questions: Sequence[str], ctx, quality_judge, task_judge,
                  reward: RewardConfig, cfg: CacheConfig, seed: int, tags=None) -> tuple[ContextResult,
                                                                                          PairExample | None]:
  """Checks and compares one context's rollouts (drawn); returns its result and pair (or None)."""
  tokenizer = processor.tokenizer
  responses, texts, parses = drawn.responses, drawn.texts, drawn.parses
  valid = [i for i, p in enumerate(parses) if p.ok and p.think_tokens <= cfg.think_cap]
  desc_tokens = [len(tokenizer.encode(p.description, add_special_tokens=False)) if p.ok else 0 for p in parses]
  quality = score_group(parses, ctx, quality_judge, dataclasses.replace(reward, memory_token_threshold=1 << 30),
                        tags, rank=False)
  correct = [bool(quality.passed[i]) and desc_tokens[i] <= cfg.desc_cap for i in range(len(parses))]
  descriptions = [p.description or "" for p in parses]
  rng = np.random.default_rng(seed)
  preferences, compared = judge_context(questions, descriptions, valid, task_judge, rng, cfg)
  pair = select_pair([Candidate(c, t) for c, t in zip(correct, desc_tokens)], preferences)
  result = ContextResult(texts, correct, desc_tokens, preferences, pair, compared)
  if pair is None:
    return result, None
  example = PairExample(drawn.prompt_ids, drawn.pixels, drawn.grid, responses[pair.chosen], responses[pair.rejected])
  return result, example
