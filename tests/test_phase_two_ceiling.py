"""The ceiling of task focus (envs/synthworld/ceiling.py) against SynthWorld's ground truth."""

import numpy as np
import pytest

from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld.ceiling import focus, focus_ceiling
from taskmem_jax.envs.synthworld.qa import evaluate_memory
from taskmem_jax.envs.synthworld.reader import ParsedFact, answer
from taskmem_jax.envs.synthworld.teacher import teacher_episodic_memory


@pytest.fixture(scope="module")
def stream_and_tasks():
  stream = sw.generate(1000, sw.WorldConfig(num_clips=10))
  return stream, sw.make_tasks(stream, seed=1000, tasks=("ocr", "counting"))


def test_focus_reads_the_hint_like_the_task_judge():
  fact = lambda kind, **kw: ParsedFact(kind, **kw)
  ocr = focus(["what digit did the sign show at the end of clip 3?"])
  assert ocr(fact("sign_change", digit=4, prev_digit=2)) and not ocr(fact("move", person=1))
  pick = focus(["who picked up the red cube in clip 2?"])
  assert pick(fact("pick_up", person=2)) and not pick(fact("appear", colour="red"))
  with pytest.raises(ValueError, match="no questions"):
    focus([])


def test_ceiling_is_the_paired_teacher_difference(stream_and_tasks):
  stream, tasks = stream_and_tasks
  late = {t: q[5:] for t, q in tasks.items()}
  hints = {t: [x.text for x in q[:5]] for t, q in tasks.items()}
  out = focus_ceiling(stream, late, hints, budget_tokens=14, seeds=2)
  for task in late:  # recomputed by hand from the teacher, seed by seed
    prefer = focus(hints[task])
    acc = lambda rng, pick: evaluate_memory(stream, teacher_episodic_memory(stream, budget_tokens=14, rng=rng,
                                                                            prefer=pick),
                                            {task: late[task]}, answer)[1]["overall"]["acc"]
    random_acc = np.mean([acc(np.random.default_rng(s), None) for s in range(2)])
    focused_acc = np.mean([acc(np.random.default_rng(s), prefer) for s in range(2)])
    assert out[task]["random"] == pytest.approx(random_acc) and out[task]["focused"] == pytest.approx(focused_acc)
    assert out[task]["gain"] == pytest.approx(focused_acc - random_acc)
    assert (out[task]["budget"], out[task]["seeds"]) == (14, 2)
  # At one fact per clip, keeping the sign changes answers what the sign showed far more often.
  assert out["ocr"]["focused"] > out["ocr"]["random"] + 0.2
  with pytest.raises(ValueError, match=r"no hint for task\(s\) \['ocr'\]"):
    focus_ceiling(stream, late, {"counting": hints["counting"]}, budget_tokens=14)
  with pytest.raises(ValueError, match="seeds=0"):
    focus_ceiling(stream, late, hints, budget_tokens=14, seeds=0)
