"""Phase-One rewards: config, the four terms, the judge interface and its implementations, group scoring."""

from taskmem_jax.rewards.config import OFFICIAL_YAML, RewardConfig, RewardConfigError
from taskmem_jax.rewards.ground_truth import GroundTruthJudge
from taskmem_jax.rewards.judge import Judge, Ranking, Verdict, WindowContext
from taskmem_jax.rewards.score import FORMAT_FAILED, JUDGE_FAILED, PARSED, GroupScore, score_group
from taskmem_jax.rewards.terms import (FACE_TAGS, SYNTHWORLD_TAGS, IdentityTags, quality_reward, richness_rewards,
                                       thinking_reward)

__all__ = [
    "FACE_TAGS", "FORMAT_FAILED", "GroundTruthJudge", "GroupScore", "IdentityTags", "JUDGE_FAILED", "Judge",
    "OFFICIAL_YAML", "PARSED", "Ranking", "RewardConfig", "RewardConfigError", "SYNTHWORLD_TAGS", "Verdict",
    "WindowContext", "quality_reward", "richness_rewards", "score_group", "thinking_reward",
]
