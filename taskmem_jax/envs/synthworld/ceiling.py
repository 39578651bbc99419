"""The ceiling of task focus on SynthWorld: what Phase Two could gain per task with a perfect reader.

Phase Two moves memory toward the facts a task's questions need. How much that can raise Acc depends on
the world's questions and the memory's budget, not only on the policy: a count over several clips needs
every event of them, which no budgeted memory keeps, focused or not. Here the programmatic teacher
(faithful, non-redundant, within the token budget) writes the stream's memory twice per seed: drawing
facts at random (Phase One's teacher), and drawing first the facts that the task reward model says the
hint's questions need (task_judge.needed). Both answer the task's later questions; the
difference is what task focus can gain at that budget when every fact is read right. The same seed
gives both memories the same draw order within each group, so the comparison is paired.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from taskmem_jax.envs.synthworld.qa import evaluate_memory
from taskmem_jax.envs.synthworld.questions import WorldQuestion
from taskmem_jax.envs.synthworld.reader import ParsedFact, answer
from taskmem_jax.envs.synthworld.task_judge import needed_by
from taskmem_jax.envs.synthworld.teacher import teacher_episodic_memory
from taskmem_jax.envs.synthworld.world import World


def focus(hint: Sequence[str]) -> Callable[[ParsedFact], bool]:
  """The predicate 'this fact is of a (kind, subject) that the hint's questions need', as the task judge
  reads them (synthworld_task.needed_by)."""
  if not hint:
    raise ValueError("focus: the hint has no questions")
  return needed_by(hint)


def focus_ceiling(stream: World, late: dict[str, Sequence[WorldQuestion]], hints: dict[str, Sequence[str]], *,
                  budget_tokens: int, seeds: int = 8, answerer: Callable = answer) -> dict[str, dict]:
  """late: task -> the questions scored (those after the adapter took over); hints: task -> the hint
  questions. Returns task -> {"random", "focused" (mean Acc over `seeds` teacher seeds), "gain"
  (focused - random), "budget", "seeds"}."""
  if seeds < 1:
    raise ValueError(f"focus_ceiling: seeds={seeds}; need at least 1")
  missing = sorted(set(late) - set(hints))
  if missing:
    raise ValueError(f"focus_ceiling: no hint for task(s) {missing}")
  teacher = lambda seed, prefer=None: teacher_episodic_memory(stream, budget_tokens=budget_tokens,
                                                              rng=np.random.default_rng(seed), prefer=prefer)
  randoms = [teacher(seed) for seed in range(seeds)]  # the random teacher is the same for every task
  out = {}
  for task, questions in late.items():
    prefer = focus(hints[task])
    acc = lambda memory: evaluate_memory(stream, memory, {task: list(questions)}, answerer)[1]["overall"]["acc"]
    random_acc = float(np.mean([acc(memory) for memory in randoms]))
    focused_acc = float(np.mean([acc(teacher(seed, prefer)) for seed in range(seeds)]))
    out[task] = {"random": random_acc, "focused": focused_acc, "gain": focused_acc - random_acc,
                 "budget": int(budget_tokens), "seeds": int(seeds)}
  return out
