"""Question families over a SynthWorld stream, modelled on the benchmarks' task types.

Each task type (TASKS) is one task, as in the paper's protocol: its questions arrive one by one, each
after the clips it asks about, and are answered from the memory alone. Families:
- attribute: the colour or shape of the object involved in an event (VideoMME Attribute Perception);
- counting: how many events of a kind happened in one to three clips (Counting Problem; EgoTempo
  Counting Actions);
- spatial: where an object or person was at the end of a clip, or where an action happened (Spatial
  Perception; EgoTempo Locating Object);
- ocr: the digit the sign showed at the end of a clip or before a change (OCR Problems);
- action: who picked up / put down an object, or what a person picked up / put down (Action
  Recognition; EgoLife EventRecall; EgoTempo Action-Specific Object);
- temporal: which of four events happened first or last (Temporal Perception; EgoTempo Temporal
  Event Ordering).

Every question is multiple choice with four distinct options (A-D), exactly one of them true by the
ground truth. Answers and distractors are computed from the stream's facts; a question is only asked
when its description picks out one event (e.g. only one circle appeared in the north-west in that
clip). Distractors come first from values the same clips make plausible (colours of other objects seen
in the clip, people active in it, digits the sign showed), then from the whole closed vocabulary.
`needed_facts` are the facts that answer a question; TASK_KINDS says which facts a task type can need.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from taskmem_jax.envs.synthworld.render import COLOURS, REGIONS, SHAPES
from taskmem_jax.benchmarks.base import Question
from taskmem_jax.envs.synthworld.world import CLIP_SECONDS, KINDS, Fact, World

TASKS = ("attribute", "counting", "spatial", "ocr", "action", "temporal")
LETTERS = ("A", "B", "C", "D")
SPATIAL_LOOKBACK = 2  # "where was X at the end of clip c" only when X last arrived in clips c-2..c

TEMPLATES = {
    # attribute: clause = what happened to the object
    "colour": "what colour was the {shape} that {clause} in clip {clip}?",
    "shape": "what shape was the {colour} object that {clause} in clip {clip}?",
    "appear": "appeared in the {region}",
    "disappear": "disappeared from the {region}",
    "move": "moved from the {region} to the {to_region}",
    "pick_up": "person {person} picked up",
    "put_down": "person {person} put down",
    # counting
    "count": "how many times did {who} {verb} in {span}?",
    "one_clip": "clip {clip}",
    "clips": "clips {first} to {last}",
    # spatial
    "where_object": "where was the {colour} {shape} at the end of clip {clip}?",
    "where_person": "where was person {person} at the end of clip {clip}?",
    "where_pick_up": "where did person {person} pick up the {colour} {shape} in clip {clip}?",
    "where_put_down": "where did person {person} put down the {colour} {shape} in clip {clip}?",
    # ocr
    "sign_at_end": "what digit did the sign show at the end of clip {clip}?",
    "sign_before": "what digit did the sign show before it changed to {digit} in clip {clip}?",
    # action
    "who_pick_up": "who picked up the {colour} {shape} in clip {clip}?",
    "who_put_down": "who put down the {colour} {shape} in clip {clip}?",
    "what_pick_up": "what did person {person} pick up in clip {clip}?",
    "what_put_down": "what did person {person} put down in clip {clip}?",
    # temporal
    "first": "which of these happened first in {span}?",
    "last": "which of these happened last in {span}?",
    # options
    "person": "person {person}",
    "object": "the {colour} {shape}",
}

# Counting: (who, verb, does the fact count). "person {person}" rows are asked for each person.
COUNTS = (
    ("an object", "appear", lambda f, k: f.kind == "appear" and f.person is None),
    ("an object", "disappear", lambda f, k: f.kind == "disappear" and f.person is None),
    ("an object", "move", lambda f, k: f.kind == "move" and f.person is None),
    ("a person", "appear", lambda f, k: f.kind == "appear" and f.person is not None),
    ("a person", "disappear", lambda f, k: f.kind == "disappear" and f.person is not None),
    ("a person", "move", lambda f, k: f.kind == "move" and f.person is not None),
    ("a person", "pick up an object", lambda f, k: f.kind == "pick_up"),
    ("a person", "put down an object", lambda f, k: f.kind == "put_down"),
    ("person {person}", "move", lambda f, k: f.kind == "move" and f.person == k),
    ("person {person}", "pick up an object", lambda f, k: f.kind == "pick_up" and f.person == k),
    ("person {person}", "put down an object", lambda f, k: f.kind == "put_down" and f.person == k),
    ("the sign", "change", lambda f, k: f.kind == "sign_change"),
)
COUNT_SPANS = (1, 2, 3)  # clips per counting question

# The fact kinds whose facts can answer each task type's questions.
TASK_KINDS = {
    "attribute": frozenset({"appear", "disappear", "move", "pick_up", "put_down"}),
    "counting": frozenset(KINDS),
    "spatial": frozenset({"appear", "move", "pick_up", "put_down"}),
    "ocr": frozenset({"sign_change"}),
    "action": frozenset({"pick_up", "put_down"}),
    "temporal": frozenset(KINDS),
}


@dataclasses.dataclass(frozen=True)
class WorldQuestion(Question):
  """A benchmark Question (qid "sw<seed>-<task>-<k>", k in arrival order; ask_after = the end of
  asked_after_clip) with its ground truth. task: one of TASKS; options: four distinct strings; answer: the
  letter of the true option; about_clips: the clips the question is about (its own clip span plus the clips
  of its needed facts); asked_after_clip >= max(about_clips): the question arrives once that clip has been
  seen; needed_facts: the facts that answer it."""
  about_clips: tuple[int, ...] = ()
  asked_after_clip: int = 0
  needed_facts: tuple[Fact, ...] = ()

  @property
  def answer_text(self) -> str:
    return self.options[LETTERS.index(self.answer)]

  def prompt(self) -> str:
    """The question and its lettered options, one per line."""
    return "\n".join([self.text] + [f"{letter}. {option}" for letter, option in zip(LETTERS, self.options)])


@dataclasses.dataclass(frozen=True)
class _Draft:
  """A question before its options are drawn. tiers: candidate distractors, most plausible first;
  options: a fixed option set instead (temporal questions)."""
  text: str
  answer: str
  about: tuple[int, ...]
  needed: tuple[Fact, ...]
  tiers: tuple[tuple[str, ...], ...] = ()
  options: tuple[str, ...] = ()


def make_questions(stream: World, task: str, num: int | None = None, *, seed: int = 0,
                   max_delay: int = 2) -> list[WorldQuestion]:
  """`num` questions of `task` (None: every question the stream supports), in arrival order.

  Each question arrives after the last clip it is about plus a random delay of 0..max_delay clips
  (capped at the last clip). Raises ValueError when the stream supports fewer than `num` questions.
  """
  if task not in TASKS:
    raise ValueError(f"task={task!r}: unknown; choose one of {TASKS}")
  if num is not None and (not isinstance(num, numbers.Integral) or num < 1):
    raise ValueError(f"num={num!r}: must be a positive integer or None")
  if not isinstance(max_delay, numbers.Integral) or max_delay < 0:
    raise ValueError(f"max_delay={max_delay!r}: must be an integer >= 0")
  if not isinstance(seed, numbers.Integral) or seed < 0:
    raise ValueError(f"seed={seed!r}: must be an integer >= 0")
  rng = np.random.default_rng([int(seed), TASKS.index(task)])
  drafts = list({d.text: d for d in _FAMILIES[task](stream, rng)}.values())
  if num is not None and num > len(drafts):
    raise ValueError(f"the stream of seed {stream.seed} supports {len(drafts)} {task} questions; num={num} asked")
  chosen = sorted(rng.choice(len(drafts), len(drafts) if num is None else num, replace=False).tolist())
  questions = [_finish(task, drafts[i], stream, rng, max_delay) for i in chosen]
  questions.sort(key=lambda q: (q.asked_after_clip, q.about_clips[-1], q.needed_facts[-1].time))
  return [dataclasses.replace(q, qid=f"sw{stream.seed}-{task}-{k}") for k, q in enumerate(questions)]


def make_tasks(stream: World, num_per_task: int | None = None, *, tasks=TASKS, seed: int = 0,
               max_delay: int = 2) -> dict[str, list[WorldQuestion]]:
  """task -> its questions in arrival order (see make_questions)."""
  return {task: make_questions(stream, task, num_per_task, seed=seed, max_delay=max_delay) for task in tasks}


def facts_needed_by(questions: list[WorldQuestion]) -> list[Fact]:
  """The facts that answer any of `questions`, once each, in time order."""
  return sorted({f.frame: f for q in questions for f in q.needed_facts}.values(), key=lambda f: f.time)


def _finish(task: str, draft: _Draft, stream: World, rng: np.random.Generator, max_delay: int) -> WorldQuestion:
  options = list(draft.options)
  if not options:
    options = [draft.answer]
    for tier in draft.tiers:
      pool = [x for x in dict.fromkeys(tier) if x not in options]
      take = min(len(LETTERS) - len(options), len(pool))
      options += [pool[i] for i in sorted(rng.choice(len(pool), take, replace=False).tolist())]
  if len(set(options)) != len(LETTERS) or draft.answer not in options:  # the vocabularies make this impossible
    raise RuntimeError(f"{draft.text}: options {options} are not four distinct ones holding {draft.answer!r}")
  options = [options[i] for i in rng.permutation(len(options))]
  about = tuple(sorted(set(draft.about) | {f.clip for f in draft.needed}))
  asked = min(stream.num_clips - 1, about[-1] + int(rng.integers(max_delay + 1)))
  return WorldQuestion("", task, draft.text, tuple(options), LETTERS[options.index(draft.answer)],
                       (asked + 1) * CLIP_SECONDS, about_clips=about, asked_after_clip=asked,
                       needed_facts=tuple(sorted(draft.needed, key=lambda f: f.time)))


# --- shared helpers -------------------------------------------------------------------------------

def _by_clip(stream: World) -> list[list[Fact]]:
  clips = [[] for _ in range(stream.num_clips)]
  for f in stream.facts:
    clips[f.clip].append(f)
  return clips


def _object_name(obj) -> str:
  return TEMPLATES["object"].format(colour=obj[0], shape=obj[1])


def _person_name(person: int) -> str:
  return TEMPLATES["person"].format(person=person)


def _span(first: int, last: int) -> str:
  if first == last:
    return TEMPLATES["one_clip"].format(clip=first)
  return TEMPLATES["clips"].format(first=first, last=last)


def _unique(facts: list[Fact], fact: Fact, key) -> bool:
  """True when `fact` is the only one of `facts` with its key."""
  return sum(key(f) == key(fact) for f in facts) == 1


def _clause(f: Fact) -> str | None:
  """What happened to the object of f, as an attribute question says it; None for events without one."""
  if f.colour is None:
    return None
  return TEMPLATES[f.kind].format(region=f.region, to_region=f.to_region, person=f.person)


# --- families -------------------------------------------------------------------------------------

def _attribute(stream: World, rng) -> list[_Draft]:
  drafts = []
  for facts in _by_clip(stream):
    seen_colours = tuple(f.colour for f in facts if f.colour)
    seen_shapes = tuple(f.shape for f in facts if f.shape)
    for f in facts:
      clause = _clause(f)
      if clause is None:
        continue
      if _unique(facts, f, lambda g: (_clause(g), g.shape)):
        text = TEMPLATES["colour"].format(shape=f.shape, clause=clause, clip=f.clip)
        drafts.append(_Draft(text, f.colour, (f.clip,), (f,), (seen_colours, tuple(COLOURS))))
      if _unique(facts, f, lambda g: (_clause(g), g.colour)):
        text = TEMPLATES["shape"].format(colour=f.colour, clause=clause, clip=f.clip)
        drafts.append(_Draft(text, f.shape, (f.clip,), (f,), (seen_shapes, tuple(SHAPES))))
  return drafts


def _counting(stream: World, rng) -> list[_Draft]:
  drafts = []
  people = range(1, stream.config.num_people + 1)
  for width in COUNT_SPANS:
    for first in range(stream.num_clips - width + 1):
      clips = tuple(range(first, first + width))
      facts = stream.facts_in(*clips)
      for who, verb, counts in COUNTS:
        for person in (people if "{person}" in who else (None,)):
          needed = tuple(f for f in facts if counts(f, person))
          if not needed:  # every question needs at least one fact
            continue
          text = TEMPLATES["count"].format(who=who.format(person=person), verb=verb, span=_span(clips[0], clips[-1]))
          n = len(needed)
          # Four consecutive counts holding n, placed at random so the answer's rank carries no hint.
          low = int(rng.integers(max(0, n - 3), n + 1))
          drafts.append(_Draft(text, str(n), clips, needed, (tuple(str(i) for i in range(low, low + 4)),)))
  return drafts


def _spatial(stream: World, rng) -> list[_Draft]:
  drafts = []
  placed = {}  # ("object", (colour, shape)) or ("person", id) -> the fact that put it where it stands
  by_clip = _by_clip(stream)
  for clip, facts in enumerate(by_clip):
    for f in facts:
      if f.kind == "sign_change":
        continue
      # The object, if the fact involves one (pick up and put down move the object, not the person).
      entity = ("person", f.person) if f.colour is None else ("object", f.obj)
      if f.kind in ("appear", "move", "put_down"):
        placed[entity] = f
      elif f.kind in ("disappear", "pick_up"):
        del placed[entity]
      if f.kind in ("pick_up", "put_down") and _unique(facts, f, lambda g: (g.kind, g.person, g.obj)):
        text = TEMPLATES[f"where_{f.kind}"].format(person=f.person, colour=f.colour, shape=f.shape, clip=clip)
        drafts.append(_Draft(text, f.region, (clip,), (f,), (REGIONS,)))
    for (what, key), f in sorted(placed.items(), key=lambda item: item[1].time):
      if f.clip < clip - SPATIAL_LOOKBACK:
        continue
      region = f.to_region if f.kind == "move" else f.region
      if what == "object":
        text = TEMPLATES["where_object"].format(colour=key[0], shape=key[1], clip=clip)
      else:
        text = TEMPLATES["where_person"].format(person=key, clip=clip)
      drafts.append(_Draft(text, region, tuple(range(f.clip, clip + 1)), (f,), (REGIONS,)))
  return drafts


def _ocr(stream: World, rng) -> list[_Draft]:
  drafts = []
  last = None
  digits = tuple(str(d) for d in range(10))
  for clip, facts in enumerate(_by_clip(stream)):
    changes = [f for f in facts if f.kind == "sign_change"]
    for f in changes:
      if _unique(changes, f, lambda g: g.digit):
        text = TEMPLATES["sign_before"].format(digit=f.digit, clip=clip)
        # Other digits the sign showed in the clip; not the new digit, which the question names.
        shown = tuple(str(d) for g in changes for d in (g.prev_digit, g.digit) if d != f.digit)
        drafts.append(_Draft(text, str(f.prev_digit), (clip,), (f,), (shown, digits)))
    last = changes[-1] if changes else last
    if last is not None and last.clip >= clip - SPATIAL_LOOKBACK:
      recent = stream.facts_in(*range(last.clip, clip + 1))
      shown = tuple(str(d) for g in recent if g.kind == "sign_change" for d in (g.prev_digit, g.digit))
      text = TEMPLATES["sign_at_end"].format(clip=clip)
      drafts.append(_Draft(text, str(last.digit), tuple(range(last.clip, clip + 1)), (last,), (shown, digits)))
  return drafts


def _action(stream: World, rng) -> list[_Draft]:
  drafts = []
  everyone = tuple(_person_name(k) for k in range(1, stream.config.num_people + 1))
  every_object = tuple(_object_name((c, s)) for c in COLOURS for s in SHAPES)
  for clip, facts in enumerate(_by_clip(stream)):
    active = tuple(_person_name(f.person) for f in facts if f.person is not None)
    seen = tuple(_object_name(f.obj) for f in facts if f.colour is not None)
    for f in facts:
      if f.kind not in ("pick_up", "put_down"):
        continue
      if _unique(facts, f, lambda g: (g.kind, g.obj)):
        text = TEMPLATES[f"who_{f.kind}"].format(colour=f.colour, shape=f.shape, clip=clip)
        drafts.append(_Draft(text, _person_name(f.person), (clip,), (f,), (active, everyone)))
      if _unique(facts, f, lambda g: (g.kind, g.person)):
        text = TEMPLATES[f"what_{f.kind}"].format(person=f.person, clip=clip)
        drafts.append(_Draft(text, _object_name(f.obj), (clip,), (f,), (seen, every_object)))
  return drafts


def _temporal(stream: World, rng) -> list[_Draft]:
  drafts = []
  for width in (1, 2):
    for first in range(stream.num_clips - width + 1):
      facts = stream.facts_in(*range(first, first + width))
      clauses = [f.clause for f in facts]
      distinct = [f for f in facts if clauses.count(f.clause) == 1]  # an option must name one event
      if len(distinct) < len(LETTERS):
        continue
      picked = [distinct[i] for i in sorted(rng.choice(len(distinct), len(LETTERS), replace=False).tolist())]
      which = "first" if rng.integers(2) == 0 else "last"
      answer = picked[0] if which == "first" else picked[-1]
      text = TEMPLATES[which].format(span=_span(first, first + width - 1))
      drafts.append(_Draft(text, answer.clause, (first, first + width - 1), tuple(picked),
                           options=tuple(f.clause for f in picked)))
  return drafts


_FAMILIES = {"attribute": _attribute, "counting": _counting, "spatial": _spatial, "ocr": _ocr, "action": _action,
             "temporal": _temporal}

# Every literal phrase the questions use, for the tokenizer's vocabulary (with the world's words).
PHRASES = (*TEMPLATES.values(), *(who for who, _, _ in COUNTS), *(verb for _, verb, _ in COUNTS))
