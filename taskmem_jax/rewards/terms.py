"""The four reward terms of Phase One, each a pure function of numbers (taskmem-spec.md §2.2).

R = format_penalty when the response fails the format check; otherwise R = R_quality + R_rich + R_think.
The judges' answers come in as booleans and a ranking; everything here is arithmetic the tests check
against values computed by hand.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from taskmem_jax.rewards.config import RewardConfig


def thinking_reward(think_tokens: int, cfg: RewardConfig) -> float:
  """0 for L <= tau; think_penalty * (L - tau) / tau for tau < L < 2 tau; think_penalty for L >= 2 tau."""
  tau = cfg.think_threshold
  if think_tokens <= tau:
    return 0.0
  if think_tokens >= 2 * tau:
    return float(cfg.think_penalty)
  return float(cfg.think_penalty) * (think_tokens - tau) / tau


def quality_reward(passed: bool, cfg: RewardConfig) -> float:
  """correct_reward when every quality check passed, else wrong_reward."""
  return float(cfg.correct_reward if passed else cfg.wrong_reward)


def richness_rewards(order: Sequence[int] | None, num_ranked: int, cfg: RewardConfig) -> np.ndarray:
  """R_rich of the ranked (valid) memories, float64 [num_ranked], in their original order.

  order: indices of the ranked memories, best first. Position p scores 1 - p / (M - 1); the scores are
  min-max normalised across the M memories (all equal -> 0) and scaled by usefulness_scale *
  correct_reward. Fewer than two memories get no bonus.
  """
  bonus = np.zeros(num_ranked)
  if num_ranked < 2:
    return bonus
  if order is None or sorted(order) != list(range(num_ranked)):
    raise ValueError(f"order={order!r}: expected a permutation of range({num_ranked})")
  score = np.empty(num_ranked)
  score[np.asarray(order)] = 1.0 - np.arange(num_ranked) / (num_ranked - 1)
  low, high = score.min(), score.max()
  if high > low:
    bonus = (score - low) / (high - low)
  return cfg.usefulness_scale * cfg.correct_reward * bonus


class IdentityTags:
  """Identity-tag well-formedness: every loose mention of a tag must be a well-formed tag.

  The official check: any `face N`-like mention must be exactly `<face_N>` (a bare `<face>` fails).
  `loose` finds the mentions, `well_formed` must fullmatch each of them.
  """

  def __init__(self, loose: str, well_formed: str):
    self.loose = re.compile(loose, re.IGNORECASE)
    self.well_formed = re.compile(well_formed)

  def malformed(self, text: str) -> list[str]:
    """The mentions that are not well-formed tags."""
    return [m.group(0) for m in self.loose.finditer(text) if not self.well_formed.fullmatch(m.group(0))]


# Official: `<face_3>`; malformed: `<face>`, `face 3`, `face_3`, `<face 3>`, `<Face_3>`.
FACE_TAGS = IdentityTags(r"<\s*face[^>]*>|\bface[\s_-]*\d+", r"<face_\d+>")
# SynthWorld's tags are the words "person N"; "person" without its number, or "person_N", is malformed.
SYNTHWORLD_TAGS = IdentityTags(r"\bperson(?![a-z])(?:[\s_-]*\d+)?|<[^>]*person[^>]*>", r"person \d")
