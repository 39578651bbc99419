"""A deterministic SynthWorld answerer that reads only the memory: sentences -> facts -> option letter.

`parse_memory` splits a description at sentence and clause boundaries (". , ; ! ?", newlines, "then",
"and"; no fact template contains any of them) and parses each piece that is a fact template
(world.FACT_TEMPLATES, without its final period) over the closed word lists; anything else is ignored.

`answer` evaluates a question (questions.TEMPLATES) against the parsed facts of the memory, each tagged
with its clip id from the store and its position in the description. It relies on two conventions:
a memory describes the events of its own clip, and in time order within a description. It returns the
letter of the option the remembered facts support, or None (abstain) when they do not settle it:
nothing relevant is remembered, the facts disagree (e.g. two remembered circles appeared in the
north-west), or the supported value is not an option. It never sees the stream's ground truth, so a
memory that misses events can mislead it (a count can come out low; a stale location can be given).
Every answer rests on at least one remembered fact, so an empty memory abstains on everything.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from taskmem_jax.envs.synthworld.questions import LETTERS, WorldQuestion
from taskmem_jax.envs.synthworld.render import COLOURS, REGIONS, SHAPES
from taskmem_jax.envs.synthworld.world import Fact
from taskmem_jax.memory.store import EpisodicMemory


@dataclasses.dataclass(frozen=True)
class ParsedFact:
  """The structured content of one fact sentence: Fact's fields without time, clip or text."""
  kind: str
  person: int | None = None
  colour: str | None = None
  shape: str | None = None
  region: str | None = None
  to_region: str | None = None
  digit: int | None = None
  prev_digit: int | None = None

  @classmethod
  def of(cls, fact: Fact) -> ParsedFact:
    """The structured content of a ground-truth Fact (what parsing its sentence should give)."""
    return cls(fact.kind, fact.person, fact.colour, fact.shape, fact.region, fact.to_region, fact.digit,
               fact.prev_digit)

  @property
  def obj(self) -> tuple[str, str] | None:
    return None if self.colour is None else (self.colour, self.shape)


@dataclasses.dataclass(frozen=True)
class MemoryFact:
  """A parsed fact where the memory holds it: clip id, and its index among the clip's parsed facts."""
  clip: int
  index: int
  fact: ParsedFact


def _alternatives(words) -> str:
  # Longest first, so that no name can match a prefix of another.
  return "(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


_C, _S, _R, _D = _alternatives(COLOURS), _alternatives(SHAPES), _alternatives(REGIONS), r"(\d)"
# (pattern, fields) per template; a field list names the groups in order. Spaces match any whitespace.
_FACT_PATTERNS = tuple((re.compile(pattern.replace(" ", r"\s+")), kind, fields) for pattern, kind, fields in (
    (rf"a {_C} {_S} appears in the {_R}", "appear", ("colour", "shape", "region")),
    (rf"person {_D} appears in the {_R}", "appear", ("person", "region")),
    (rf"the {_C} {_S} disappears from the {_R}", "disappear", ("colour", "shape", "region")),
    (rf"person {_D} disappears from the {_R}", "disappear", ("person", "region")),
    (rf"the {_C} {_S} moves from the {_R} to the {_R}", "move", ("colour", "shape", "region", "to_region")),
    (rf"person {_D} moves from the {_R} to the {_R}", "move", ("person", "region", "to_region")),
    (rf"person {_D} picks up the {_C} {_S} in the {_R}", "pick_up", ("person", "colour", "shape", "region")),
    (rf"person {_D} puts down the {_C} {_S} in the {_R}", "put_down", ("person", "colour", "shape", "region")),
    (rf"the sign changes from {_D} to {_D}", "sign_change", ("prev_digit", "digit")),
))
_INT_FIELDS = ("person", "digit", "prev_digit")
_SPLIT = re.compile(r"[.,;!?\n]+|\b(?:then|and)\b", re.IGNORECASE)


def parse_clause(text: str) -> ParsedFact | None:
  """One clause (no final period) -> its fact, or None when it is not a fact template."""
  text = text.strip().lower()
  for pattern, kind, fields in _FACT_PATTERNS:
    match = pattern.fullmatch(text)
    if match:
      values = {f: int(v) if f in _INT_FIELDS else v for f, v in zip(fields, match.groups())}
      return ParsedFact(kind, **values)
  return None


@functools.lru_cache(maxsize=65536)
def _parse_cached(description: str) -> tuple[ParsedFact, ...]:
  # Evaluation parses the same descriptions once per question; they are immutable strings.
  return tuple(fact for piece in _SPLIT.split(description) if (fact := parse_clause(piece)) is not None)


def clauses(description: str) -> list[str]:
  """The non-blank clauses of a description, split where parse_memory splits it."""
  if not isinstance(description, str):
    raise TypeError(f"description: expected a string, got {type(description).__name__}")
  return [piece.strip() for piece in _SPLIT.split(description) if piece and piece.strip()]


def parse_memory(description: str) -> list[ParsedFact]:
  """The facts a description states, in the order it states them; unparseable text is skipped."""
  if not isinstance(description, str):
    raise TypeError(f"description: expected a string, got {type(description).__name__}")
  return list(_parse_cached(description))


def memory_facts(memory: EpisodicMemory) -> list[MemoryFact]:
  """Every parsed fact of the memory with its clip, in (clip, position) order: the reader's timeline."""
  if not isinstance(memory, EpisodicMemory):
    raise TypeError(f"memory: expected an EpisodicMemory, got {type(memory).__name__}")
  return [MemoryFact(clip, i, fact) for clip, description in memory.items()
          for i, fact in enumerate(parse_memory(description))]


# --- answering --------------------------------------------------------------------------------------

_SPAN = r"(?:clip (\d+)|clips (\d+) to (\d+))"
_CLAUSES = {  # attribute questions: what happened to the object -> (kind, fields it fixes)
    rf"appeared in the {_R}": ("appear", ("region",)),
    rf"disappeared from the {_R}": ("disappear", ("region",)),
    rf"moved from the {_R} to the {_R}": ("move", ("region", "to_region")),
    rf"person {_D} picked up": ("pick_up", ("person",)),
    rf"person {_D} put down": ("put_down", ("person",)),
}
_COUNT_VERBS = {"appear": "appear", "disappear": "disappear", "move": "move", "pick up an object": "pick_up",
                "put down an object": "put_down", "change": "sign_change"}


def _span(groups) -> range:
  one, first, last = groups
  return range(int(one), int(one) + 1) if one is not None else range(int(first), int(last) + 1)


def _pick(question: WorldQuestion, values) -> str | None:
  """The letter of the one value the facts support; None when there is none, several, or it is not an option."""
  values = set(values)
  if len(values) != 1:
    return None
  value = values.pop()
  return LETTERS[question.options.index(value)] if value in question.options else None


def _person(k: int) -> str:
  return f"person {k}"


def _object(obj) -> str:
  return f"the {obj[0]} {obj[1]}"


def _attribute(q: WorldQuestion, facts: list[MemoryFact], m) -> str | None:
  attribute, known, clause, clip = m[1], m[2], m[3], int(m[4])
  found = [(kind, fields, c) for pattern, (kind, fields) in _CLAUSES.items() if (c := re.fullmatch(pattern, clause))]
  if not found:
    raise ValueError(f"{q.text!r}: unknown event clause {clause!r}")
  kind, fields, c = found[0]
  wanted = {f: int(v) if f in _INT_FIELDS else v for f, v in zip(fields, c.groups())}
  wanted["shape" if attribute == "colour" else "colour"] = known
  hits = [x.fact for x in facts if x.clip == clip and x.fact.kind == kind
          and all(getattr(x.fact, f) == v for f, v in wanted.items())]
  return _pick(q, (getattr(f, attribute) for f in hits))


def _counting(q: WorldQuestion, facts: list[MemoryFact], m) -> str | None:
  who, verb, clips = m[1], _COUNT_VERBS[m[3]], _span(m.groups()[3:6])

  def counts(f: ParsedFact) -> bool:
    if f.kind != verb:
      return False
    if who == "an object":
      return f.person is None
    if who.startswith("person "):
      return f.person == int(m[2])
    return who == "the sign" or f.person is not None  # "a person"

  n = sum(counts(x.fact) for x in facts if x.clip in clips)
  # A zero count rests on no remembered fact: the memory may simply have left the events out.
  return _pick(q, [str(n)]) if n else None


def _location(entity, facts: list[MemoryFact], clip: int) -> str | None:
  """Where the entity ("object", (colour, shape)) or ("person", k) was at the end of `clip` by the last
  remembered fact about it; None when it last left the floor (disappeared or was picked up) or is unknown."""
  where = None
  for x in facts:
    f = x.fact
    if x.clip > clip or f.kind == "sign_change":
      continue
    if entity[0] == "object" and f.obj == entity[1]:
      where = {"appear": f.region, "move": f.to_region, "put_down": f.region}.get(f.kind)
    elif entity[0] == "person" and f.person == entity[1]:
      # Picking up and putting down happen in the person's own region.
      where = None if f.kind == "disappear" else f.to_region if f.kind == "move" else f.region
  return where


def _spatial(q: WorldQuestion, facts: list[MemoryFact], m) -> str | None:
  if m.re is _WHERE_AT_END_OBJECT:
    where = _location(("object", (m[1], m[2])), facts, int(m[3]))
  elif m.re is _WHERE_AT_END_PERSON:
    where = _location(("person", int(m[1])), facts, int(m[2]))
  else:  # where did person k pick up / put down X in clip c
    person, kind, obj, clip = int(m[1]), m[2].replace(" ", "_"), (m[3], m[4]), int(m[5])
    return _pick(q, [x.fact.region for x in facts if x.clip == clip and x.fact.kind == kind
                     and x.fact.person == person and x.fact.obj == obj])
  return None if where is None else _pick(q, [where])


def _ocr(q: WorldQuestion, facts: list[MemoryFact], m) -> str | None:
  changes = [x for x in facts if x.fact.kind == "sign_change"]
  if m.re is _SIGN_AT_END:
    before = [x for x in changes if x.clip <= int(m[1])]
    return _pick(q, [str(before[-1].fact.digit)]) if before else None
  digit, clip = int(m[1]), int(m[2])
  return _pick(q, [str(x.fact.prev_digit) for x in changes if x.clip == clip and x.fact.digit == digit])


def _action(q: WorldQuestion, facts: list[MemoryFact], m) -> str | None:
  if m.re is _WHO_DID:
    kind, clip = "pick_up" if m[1] == "picked up" else "put_down", int(m[4])
    return _pick(q, [_person(x.fact.person) for x in facts if x.clip == clip and x.fact.kind == kind
                     and x.fact.obj == (m[2], m[3])])
  person, kind, clip = int(m[1]), m[2].replace(" ", "_"), int(m[3])
  return _pick(q, [_object(x.fact.obj) for x in facts if x.clip == clip and x.fact.kind == kind
                   and x.fact.person == person])


def _temporal(q: WorldQuestion, facts: list[MemoryFact], m) -> str | None:
  which, clips = m[1], _span(m.groups()[1:4])
  when = {}
  for letter, option in zip(LETTERS, q.options):
    option_fact = parse_clause(option)
    if option_fact is None:
      raise ValueError(f"{q.text!r}: option {option!r} is not an event")
    found = [(x.clip, x.index) for x in facts if x.clip in clips and x.fact == option_fact]
    # An option the memory does not place (or places twice) could be anywhere: the order is unknown.
    if len(found) != 1:
      return None
    when[letter] = found[0]
  return (min if which == "first" else max)(when, key=when.get)


_WHERE_AT_END_OBJECT = re.compile(rf"where was the {_C} {_S} at the end of clip (\d+)\?")
_WHERE_AT_END_PERSON = re.compile(r"where was person (\d) at the end of clip (\d+)\?")
_SIGN_AT_END = re.compile(r"what digit did the sign show at the end of clip (\d+)\?")
_WHO_DID = re.compile(rf"who (picked up|put down) the {_C} {_S} in clip (\d+)\?")
# (task, pattern, reader). Patterns follow questions.TEMPLATES; the oracle test checks every family.
_QUESTIONS = (
    ("attribute", re.compile(r"what (colour|shape) was the (\w+)(?: object)? that (.+) in clip (\d+)\?"),
     _attribute),
    ("counting", re.compile(rf"how many times did (an object|a person|person (\d)|the sign) "
                            rf"({'|'.join(_COUNT_VERBS)}) in {_SPAN}\?"), _counting),
    ("spatial", _WHERE_AT_END_OBJECT, _spatial),
    ("spatial", _WHERE_AT_END_PERSON, _spatial),
    ("spatial", re.compile(rf"where did person (\d) (pick up|put down) the {_C} {_S} in clip (\d+)\?"), _spatial),
    ("ocr", _SIGN_AT_END, _ocr),
    ("ocr", re.compile(r"what digit did the sign show before it changed to (\d) in clip (\d+)\?"), _ocr),
    ("action", _WHO_DID, _action),
    ("action", re.compile(r"what did person (\d) (pick up|put down) in clip (\d+)\?"), _action),
    ("temporal", re.compile(rf"which of these happened (first|last) in {_SPAN}\?"), _temporal),
)


def answer(question: WorldQuestion, memory: EpisodicMemory) -> str | None:
  """The option letter the memory's facts support, or None to abstain (see the module docstring).

  Raises ValueError for a question that is not one of SynthWorld's families: that is a bug in the
  caller, not a gap in the memory.
  """
  if not isinstance(question, WorldQuestion):
    raise TypeError(f"question: expected a WorldQuestion, got {type(question).__name__}")
  facts = memory_facts(memory)
  for task, pattern, read in _QUESTIONS:
    match = pattern.fullmatch(question.text)
    if match:
      if task != question.task:
        raise ValueError(f"{question.text!r}: a {task} question filed under task {question.task!r}")
      return read(question, facts, match)
  raise ValueError(f"{question.text!r}: not a SynthWorld question the reader knows")
