"""Scoring one group: the G responses a policy wrote for one window -> rewards and their components.

As the official reward manager (taskmem-spec.md §2.2): a response that fails the format check gets
format_penalty and nothing else; the others get R_quality + R_rich + R_think, where the quality checks
are the judges' faithfulness and non-redundancy, well-formed identity tags and the memory token limit,
and richness ranks the group's responses that passed them all. A judge failure sets that response's
reward to 0 and marks the group, whose advantages the trainer then zeroes.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from taskmem_jax.memory.parse import ParseResult
from taskmem_jax.rewards.config import RewardConfig
from taskmem_jax.rewards.judge import Judge, WindowContext
from taskmem_jax.rewards.terms import IdentityTags, quality_reward, richness_rewards, thinking_reward

# Per-response status, the official fail_parsing codes.
PARSED, FORMAT_FAILED, JUDGE_FAILED = 0, 1, 2


@dataclasses.dataclass
class GroupScore:
  """Arrays of length G, one entry per response.

  reward: the total. format / quality / richness / thinking: the terms (format is format_penalty on
  failures, else 0; the others are 0 on failures). status: PARSED, FORMAT_FAILED or JUDGE_FAILED.
  passed: every quality check passed (q). correctness: q - (1 - q) on parsed responses, the
  (num_correct - num_wrong) that rl.advantages' optimize_threshold mode compares; 0 otherwise.
  faithful, non_redundant, tags_ok, within_budget: each check, NaN where it was not made (format failures,
  judge failures). memory_tokens, think_tokens: lengths (-1 where the response had no single </think>).
  reasons: why each response lost its reward ("" when it passed). group_failed: a judge failed.
  """
  reward: np.ndarray
  format: np.ndarray
  quality: np.ndarray
  richness: np.ndarray
  thinking: np.ndarray
  status: np.ndarray
  passed: np.ndarray
  correctness: np.ndarray
  faithful: np.ndarray
  non_redundant: np.ndarray
  tags_ok: np.ndarray
  within_budget: np.ndarray
  memory_tokens: np.ndarray
  think_tokens: np.ndarray
  reasons: list[str]
  group_failed: bool


def score_group(parses: Sequence[ParseResult], ctx: WindowContext, judge: Judge, cfg: RewardConfig,
                tags: IdentityTags | None = None, rng: np.random.Generator | None = None,
                rank: bool = True) -> GroupScore:
  """Rewards of one group. parses: parse_response(text, tokens=..., think_end_id=...) of each response,
  without max_memory_tokens (the budget is checked here, against cfg.memory_token_threshold). tags: the
  identity-tag rule (terms.FACE_TAGS, terms.SYNTHWORLD_TAGS); None skips the check. rng: shuffles the
  memories before ranking, as the official reward does, so a judge's position bias averages out (None:
  rollout order). rank=False skips the ranking judge (no richness), for callers that need only the
  quality check (Phase Two's pair filter)."""
  g = len(parses)
  if g == 0:
    raise ValueError("score_group: an empty group")
  for i, p in enumerate(parses):
    if not isinstance(p, ParseResult):
      raise TypeError(f"parses[{i}]: expected a ParseResult, got {type(p).__name__}")
    if p.format_ok and (p.memory_tokens is None or p.think_tokens is None):
      raise ValueError(f"parses[{i}]: no token lengths; parse with tokens= and think_end_id=")
  nan = lambda: np.full(g, np.nan)
  out = GroupScore(reward=np.zeros(g), format=np.zeros(g), quality=np.zeros(g), richness=np.zeros(g),
                   thinking=np.zeros(g), status=np.full(g, PARSED), passed=np.zeros(g, bool),
                   correctness=np.zeros(g), faithful=nan(), non_redundant=nan(), tags_ok=nan(), within_budget=nan(),
                   memory_tokens=np.array([-1 if p.memory_tokens is None else p.memory_tokens for p in parses]),
                   think_tokens=np.array([-1 if p.think_tokens is None else p.think_tokens for p in parses]),
                   reasons=[""] * g, group_failed=False)
  valid = [i for i, p in enumerate(parses) if p.format_ok]
  for i, p in enumerate(parses):
    if not p.format_ok:
      out.status[i], out.format[i], out.reasons[i] = FORMAT_FAILED, cfg.format_penalty, p.reason

  descriptions = [parses[i].description for i in valid]
  faithful = judge.faithfulness(ctx, descriptions) if valid else []
  non_redundant = judge.non_redundancy(ctx, descriptions) if valid else []
  if len(faithful) != len(valid) or len(non_redundant) != len(valid):
    raise RuntimeError(f"judge {judge.name!r} returned {len(faithful)} / {len(non_redundant)} verdicts for "
                       f"{len(valid)} descriptions")
  for k, i in enumerate(valid):
    p, f, n = parses[i], faithful[k], non_redundant[k]
    if f.failed or n.failed:
      out.status[i], out.group_failed = JUDGE_FAILED, True
      out.reasons[i] = f"judge failed: {f.reason if f.failed else n.reason}"
      continue
    checks = {"faithful": f.ok, "non_redundant": n.ok,
              "tags_ok": tags is None or not tags.malformed(p.description),
              "within_budget": p.memory_tokens <= cfg.memory_token_threshold}
    for name, ok in checks.items():
      getattr(out, name)[i] = float(ok)
    out.passed[i] = all(checks.values())
    if not out.passed[i]:
      why = {"faithful": f.reason or "not faithful", "non_redundant": n.reason or "redundant",
             "tags_ok": "malformed identity tag", "within_budget": "over the memory token limit"}
      out.reasons[i] = "; ".join(why[name] for name, ok in checks.items() if not ok)
    out.quality[i] = quality_reward(out.passed[i], cfg)
    out.thinking[i] = thinking_reward(p.think_tokens, cfg)
    out.correctness[i] = 1.0 if out.passed[i] else -1.0

  ranked = [i for i in valid if out.passed[i] and out.status[i] == PARSED]
  if rank and len(ranked) >= 2 and not out.group_failed:
    if rng is not None:
      ranked = [ranked[k] for k in rng.permutation(len(ranked))]
    ranking = judge.rank(ctx, [parses[i].description for i in ranked])
    order = ranking.order
    if ranking.failed:
      # As the official reward: a ranking that fails (after the judge's retries) falls back to the identity
      # order, the rollouts' own order before the shuffle; the group is still scored.
      order = sorted(range(len(ranked)), key=lambda pos: ranked[pos])
      for i in ranked:
        out.reasons[i] = f"ranking failed ({ranking.reason}): richness in rollout order"
    out.richness[ranked] = richness_rewards(order, len(ranked), cfg)

  scored = out.status == PARSED
  out.reward = np.where(scored, out.quality + out.richness + out.thinking, 0.0)
  failed_format = out.status == FORMAT_FAILED
  out.reward[failed_format] = cfg.format_penalty
  if cfg.failure_penalty and scored.any():
    out.reward[failed_format] = out.reward[scored].min() + cfg.failure_penalty
  out.quality[~scored], out.thinking[~scored], out.richness[~scored] = 0.0, 0.0, 0.0
  return out
