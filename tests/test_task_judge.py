"""The Phase-Two task judges: both-order debiasing, and SynthWorld's reading of question wording."""

import pytest

from taskmem_jax.envs.synthworld import TASKS, WorldConfig, generate, make_tasks
from taskmem_jax.envs.synthworld.task_judge import ALL, SynthWorldTaskJudge, needed, subject, usefulness
from taskmem_jax.rewards.task_judge import TIE, Preference, TaskJudge, both_orders


class _Scripted(TaskJudge):
  """Answers from a table keyed by (first, second)."""

  def __init__(self, table):
    self.table = table

  def prefer(self, questions, first, second):
    return self.table[(first, second)]


def test_both_orders_keeps_only_agreement():
  table = {("a", "b"): Preference(0), ("b", "a"): Preference(1),          # a wins both ways
           ("c", "d"): Preference(0), ("d", "c"): Preference(0),          # position bias: dropped
           ("e", "f"): Preference(TIE), ("f", "e"): Preference(0),        # a tie in one order: dropped
           ("g", "h"): Preference(None, "timeout"), ("h", "g"): Preference(1),
           ("i", "j"): Preference(1), ("j", "i"): Preference(0)}          # j wins both ways
  out = both_orders(_Scripted(table), ["q?"], [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h"), ("i", "j")])
  assert [p.winner for p in out] == [0, None, None, None, 1]
  assert out[1].reason == "the two orders disagree" and out[2].reason == "tie" and "timeout" in out[3].reason
  with pytest.raises(ValueError, match="1 to 5"):
    both_orders(_Scripted(table), ["q?"] * 6, [("a", "b")])
  with pytest.raises(TypeError, match="one string"):
    both_orders(_Scripted(table), "q?", [("a", "b")])


def test_needed_kinds_cover_the_ground_truth_facts_of_every_question():
  # Independent check: the wording-based needs include the kind and subject of every fact the world
  # says answers the question, for every task family over several streams.
  for seed in (0, 1, 2):
    stream = generate(seed, WorldConfig(num_clips=12))
    for task, questions in make_tasks(stream, seed=seed).items():
      for q in questions:
        needs = needed(q.text)
        for fact in q.needed_facts:
          assert (fact.kind, subject(fact)) in needs, (task, q.text, fact.text)
        if task in ("ocr", "action"):
          assert needs != ALL and len(needs) <= 2, (task, q.text)
  assert needed("what digit did the sign show at the end of clip 3?") == {("sign_change", "sign")}
  assert needed("how many times did a person move in clips 2 to 4?") == {("move", "person")}
  assert needed("something else entirely?") == ALL
  assert set(TASKS) == {"attribute", "counting", "spatial", "ocr", "action", "temporal"}


def test_synthworld_task_judge_prefers_the_memory_with_more_needed_facts():
  ocr = ["what digit did the sign show at the end of clip 3?"]
  signs = "the sign changes from 3 to 4. a red circle appears in the north-west."
  objects = "a red circle appears in the north-west. a blue square appears in the south-east."
  judge = SynthWorldTaskJudge()
  assert usefulness(ocr, signs) == 1 and usefulness(ocr, objects) == 0
  assert judge.prefer(ocr, signs, objects).winner == 0
  assert judge.prefer(ocr, objects, signs).winner == 1
  assert judge.prefer(ocr, objects, objects).winner == TIE
  assert [p.winner for p in both_orders(judge, ocr, [(objects, signs)])] == [1]
  attribute = ["what colour was the square that appeared in the south-east in clip 1?"]
  assert judge.prefer(attribute, signs, objects).winner == 1
