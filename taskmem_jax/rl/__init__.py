"""Phase One learning: group advantages, GSPO / GRPO / k3-KL losses, the history simulator, the trainer."""

from taskmem_jax.rl.advantages import MODES, group_advantages
from taskmem_jax.rl.losses import AGGREGATIONS, LOSSES, aggregate, grpo_loss, gspo_loss, k3_kl

__all__ = ["AGGREGATIONS", "LOSSES", "MODES", "aggregate", "group_advantages", "grpo_loss", "gspo_loss", "k3_kl"]
