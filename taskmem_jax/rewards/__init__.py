"""Phase-One rewards: config, the four terms, the judge interface and its implementations (a
local Qwen3-VL, an OpenAI-compatible server; SynthWorld's ground truth is envs.synthworld.judge), and group scoring."""

from taskmem_jax.rewards.config import OFFICIAL_YAML, RewardConfig, RewardConfigError
from taskmem_jax.rewards.http import CallError, HTTPJudge
from taskmem_jax.rewards.judge import Judge, Ranking, Verdict, WindowContext
from taskmem_jax.rewards.local_llm import LocalLLMJudge
from taskmem_jax.rewards.score import FORMAT_FAILED, JUDGE_FAILED, PARSED, GroupScore, score_group
from taskmem_jax.rewards.terms import (FACE_TAGS, SYNTHWORLD_TAGS, IdentityTags, quality_reward, richness_rewards,
                                       thinking_reward)

__all__ = [
    "CallError", "FACE_TAGS", "FORMAT_FAILED", "HTTPJudge", "LocalLLMJudge", "GroupScore", "IdentityTags", "JUDGE_FAILED", "Judge",
    "OFFICIAL_YAML", "PARSED", "Ranking", "RewardConfig", "RewardConfigError", "SYNTHWORLD_TAGS", "Verdict",
    "WindowContext", "quality_reward", "richness_rewards", "score_group", "thinking_reward",
]
