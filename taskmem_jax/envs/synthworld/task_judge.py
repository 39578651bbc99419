"""The SynthWorld task reward model: a memory's usefulness for a task, read off the questions' wording.

Like the paper's text-only judge it sees the example questions (never their answers, nor the video) and
two memories. It infers from each question's template which kinds of fact such questions need, as
(kind, subject) pairs, subject being "object", "person" or "sign" (e.g. "how many times did a person
move in clips 2 to 4?" needs (move, person) facts; "what digit did the sign show ..." needs
sign changes). A memory's usefulness is the number of distinct facts it states (envs/synthworld/reader)
of a needed kind; the more useful memory wins, equal counts tie. Truth is not checked here: the pair
filter in phase_two/pairs.py requires the winner's quality to be at least the loser's.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from taskmem_jax.envs.synthworld.reader import ParsedFact, parse_memory
from taskmem_jax.envs.synthworld.world import KINDS
from taskmem_jax.rewards.task_judge import TIE, Preference, TaskJudge, check_questions

_EVENT_CLAUSES = (("appeared in", ("appear", "object")), ("disappeared from", ("disappear", "object")),
                  ("moved from", ("move", "object")), ("picked up", ("pick_up", "person")),
                  ("put down", ("put_down", "person")))
_COUNT_WHO = {"an object": "object", "a person": "person", "the sign": "sign"}
_COUNT_VERB = {"appear": "appear", "disappear": "disappear", "move": "move", "pick up an object": "pick_up",
               "put down an object": "put_down", "change": "sign_change"}
_LOCATION = {("appear", "object"), ("move", "object"), ("pick_up", "person"), ("put_down", "person")}
ALL = frozenset((k, s) for k in KINDS for s in ("object", "person", "sign"))


def needed(question: str) -> frozenset[tuple[str, str]]:
  """(kind, subject) pairs whose facts can answer questions like `question` (all of them when the
  wording is not one the judge knows, or the question is about event order)."""
  q = question.strip().lower()
  if q.startswith(("what colour was", "what shape was")):
    return frozenset(need for clause, need in _EVENT_CLAUSES if clause in q)
  m = re.match(r"how many times did (an object|a person|person \d|the sign) (.+?) in clips? ", q)
  if m:
    who = _COUNT_WHO.get(m.group(1), "person")
    kind = _COUNT_VERB.get(m.group(2))
    return frozenset({(kind, who)}) if kind else ALL
  if q.startswith("where was the "):
    return frozenset(_LOCATION)
  if q.startswith("where was person "):
    return frozenset({("appear", "person"), ("move", "person")})
  for verb, kind in (("pick up", "pick_up"), ("picked up", "pick_up"), ("put down", "put_down")):
    if q.startswith(("where did person", "who ", "what did person")) and verb in q:
      return frozenset({(kind, "person")})
  if "the sign show" in q:
    return frozenset({("sign_change", "sign")})
  return ALL  # temporal order ("which of these happened first ...") and unknown wordings


def subject(fact: ParsedFact) -> str:
  if fact.kind == "sign_change":
    return "sign"
  return "person" if fact.person is not None else "object"


def needed_by(questions: Sequence[str]) -> Callable[[ParsedFact], bool]:
  """The predicate 'this fact is of a (kind, subject) that some of the questions need'."""
  needs = frozenset().union(*(needed(q) for q in questions))
  return lambda fact: (fact.kind, subject(fact)) in needs


def usefulness(questions: Sequence[str], memory: str) -> int:
  """Distinct facts of `memory` of a kind the questions need."""
  is_needed = needed_by(questions)
  return len({f for f in parse_memory(memory) if is_needed(f)})


class SynthWorldTaskJudge(TaskJudge):
  name = "synthworld_task"

  def prefer(self, questions, first: str, second: str) -> Preference:
    questions = check_questions(questions)
    a, b = usefulness(questions, first), usefulness(questions, second)
    return Preference(TIE if a == b else int(b > a), f"useful facts {a} vs {b}")
