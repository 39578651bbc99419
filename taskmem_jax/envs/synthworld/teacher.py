"""The programmatic teacher: SynthWorld's stand-in for the paper's Gemini seed memories.

A teacher memory of clip c is a random subset of c's facts, in time order, their sentences (Fact.text)
joined by spaces: faithful (every sentence is a true fact of the clip), non-redundant (no fact the
previous memories already state, nor any fact twice), and within a token budget. The budget counts the
description's tokens under the SynthWorld tokenizer's word-level pre-tokenization (exactly what its
tokenizer.json encodes, since every word of a fact sentence is in the vocabulary); the policy response
around it (`teacher_response`) adds a few tokens of thinking and JSON that the budget does not cover.
order="time" (an option for SFT data, not the teacher's definition) keeps the earliest facts that fit.
prefer= (a predicate on ParsedFact) draws the facts it accepts first: a task-focused teacher, the
perfect-reading ceiling of what Phase Two's task focus can gain (envs/synthworld/ceiling.py).
"""

from __future__ import annotations

import json
import numbers
from typing import Callable

import numpy as np

from taskmem_jax.envs.synthworld.reader import ParsedFact, parse_memory
from taskmem_jax.envs.synthworld.tokenizer import pre_tokenize
from taskmem_jax.envs.synthworld.world import World
from taskmem_jax.memory.parse import KEY, THINK_END
from taskmem_jax.memory.store import MAX_PREVIOUS, EpisodicMemory


def count_tokens(text: str) -> int:
  """Tokens of `text` under the SynthWorld tokenizer (without special tokens)."""
  return len(pre_tokenize(text))


ORDERS = ("random", "time")


def teacher_memory(stream: World, clip: int, *, budget_tokens: int, rng: np.random.Generator,
                   previous: list[str] | None = None, order: str = "random",
                   prefer: Callable[[ParsedFact], bool] | None = None) -> str:
  """A description of `clip`: facts drawn in random order, each kept if it still fits `budget_tokens`
  and is not already stated by `previous` (earlier memories' descriptions) or by a kept fact; the kept
  ones are written in time order. Returns "" when no new fact fits (the caller leaves the clip out).

  order="time" draws the facts in time order instead (the earliest ones that fit; rng unused): a target
  that is a function of the video, which SFT data can use (experiments/make_sft_data.py).
  prefer: the facts it accepts are drawn before the others, each group in the order above."""
  if not isinstance(budget_tokens, numbers.Integral) or isinstance(budget_tokens, bool) or budget_tokens < 1:
    raise ValueError(f"budget_tokens={budget_tokens!r}: must be a positive integer")
  if order not in ORDERS:
    raise ValueError(f"order={order!r}: expected one of {ORDERS}")
  if not isinstance(rng, np.random.Generator):
    raise TypeError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
  if previous is None:
    previous = []
  if isinstance(previous, str):
    raise TypeError("previous: expected a list of descriptions, got one string")
  stated = {fact for description in previous for fact in parse_memory(description)}
  facts = stream.facts_in(clip)
  kept, used = set(), 0
  draws = rng.permutation(len(facts)).tolist() if order == "random" else list(range(len(facts)))
  if prefer is not None:
    draws.sort(key=lambda i: not prefer(ParsedFact.of(facts[i])))  # stable: keeps each group's order
  for i in draws:
    fact, cost = ParsedFact.of(facts[i]), count_tokens(facts[i].text)
    if fact in stated or used + cost > budget_tokens:
      continue
    kept.add(i)
    stated.add(fact)
    used += cost
  return " ".join(facts[i].text for i in sorted(kept))


def teacher_episodic_memory(stream: World, *, budget_tokens: int, rng: np.random.Generator,
                            num_previous: int = MAX_PREVIOUS, order: str = "random",
                            prefer: Callable[[ParsedFact], bool] | None = None) -> EpisodicMemory:
  """Teacher memories of every clip of the stream in turn, each told the `num_previous` memories before
  it, as the policy's window shows them. Clips with no new fact that fits are left out. order, prefer: as
  in teacher_memory."""
  memory = EpisodicMemory()
  for clip in range(stream.num_clips):
    description = teacher_memory(stream, clip, budget_tokens=budget_tokens, rng=rng,
                                 previous=memory.previous(clip, num_previous), order=order, prefer=prefer)
    if description:
      memory.add(clip, description)
  return memory


def teacher_response(description: str) -> str:
  """The policy's full target for `description`: a short thinking (in the SynthWorld vocabulary), </think>,
  then {"description": "..."}; what memory.parse.parse_response accepts."""
  if not isinstance(description, str) or not description.strip():
    raise ValueError(f"description={description!r}: a teacher response needs a non-empty description")
  if THINK_END in description:
    raise ValueError(f"description: contains {THINK_END}, which would break the response format")
  n = len(parse_memory(description))
  thinking = f"describe {n} event{'' if n == 1 else 's'}."
  return f"{thinking}{THINK_END}{json.dumps({KEY: description})}"
