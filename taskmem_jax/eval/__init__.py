"""Evaluation of memory-only question answering: Acc / Cov / Prec per task (metrics)."""

from taskmem_jax.eval.metrics import OVERALL, format_table, save_json, score

__all__ = ["OVERALL", "format_table", "save_json", "score"]
