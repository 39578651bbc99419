"""Reward weights and thresholds of Phase One (taskmem-spec.md §2.2).

Defaults are the values of the official README launch command (correct 0.5, wrong -0.5, format -1.5,
think penalty -1 beyond tau = 1200 tokens, memory limit 150 tokens, usefulness 0.1). The YAML and class
defaults of the official code differ (spec §5); `OFFICIAL_YAML` keeps those for comparison runs.
Every field is a plain number so a sweep can vary any of them (experiments/sweep.py).
"""

from __future__ import annotations

import dataclasses
import math
import numbers


class RewardConfigError(ValueError):
  """A reward field with a value that would make the reward meaningless."""


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """correct_reward / wrong_reward: R_quality when every quality check passes / when one fails.
  format_penalty: the whole reward of a response that fails the format check.
  think_penalty, think_threshold: R_think is 0 up to tau = think_threshold tokens of thinking, linear to
    think_penalty at 2 tau, think_penalty beyond.
  memory_token_threshold: L_mem, tokens from </think> to the end of the response.
  usefulness_scale: R_rich = usefulness_scale * correct_reward * (min-max normalised rank score).
  failure_penalty: 0 = off; else a format failure gets min(valid rewards of its group) + failure_penalty
    instead of format_penalty (the official optional variant).
  check_identity_tags: whether malformed identity tags fail the quality check.
  """
  correct_reward: float = 0.5
  wrong_reward: float = -0.5
  format_penalty: float = -1.5
  think_penalty: float = -1.0
  think_threshold: int = 1200
  memory_token_threshold: int = 150
  usefulness_scale: float = 0.1
  failure_penalty: float = 0.0
  check_identity_tags: bool = True

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.type == "bool":
        if not isinstance(value, bool):
          raise RewardConfigError(f"RewardConfig.{field.name}={value!r}: expected a bool")
        continue
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise RewardConfigError(f"RewardConfig.{field.name}={value!r}: expected a finite number")
    for name in ("think_threshold", "memory_token_threshold"):
      value = getattr(self, name)
      if value != int(value) or value < 1:
        raise RewardConfigError(f"RewardConfig.{name}={value!r}: expected a positive whole number of tokens")
    if self.usefulness_scale < 0:
      raise RewardConfigError(f"RewardConfig.usefulness_scale={self.usefulness_scale!r}: must be >= 0")

  @classmethod
  def from_dict(cls, values) -> RewardConfig:
    """From a dict or ml_collections.ConfigDict; unknown keys are an error naming them."""
    values = dict(values)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise RewardConfigError(f"unknown reward fields {unknown}; known: {[f.name for f in dataclasses.fields(cls)]}")
    return cls(**values)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


# The defaults of the official reward_model.yaml / class (spec §5), for comparison runs.
OFFICIAL_YAML = RewardConfig(format_penalty=-6.0, think_threshold=6400, memory_token_threshold=25,
                             usefulness_scale=1.0)
