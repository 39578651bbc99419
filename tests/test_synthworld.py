"""SynthWorld streams and questions, checked against independent readers of the rendered frames.

The readers here use only the layout constants, the palette, the shape masks and the digit font: never
the generator's state, sprite table or codebook. Frames are read back into scenes, consecutive scenes
into events, fact sentences into events by regex, and questions are answered again from those.
Events are tuples:
  ("appear" | "disappear", "object", (colour, shape), region) / (..., "person", id, region)
  ("move", "object", (colour, shape), from, to) / ("move", "person", id, from, to)
  ("pick_up" | "put_down", id, (colour, shape), region)
  ("sign_change", previous digit, digit)
"""

import collections
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from taskmem_jax.envs.synthworld import render
from taskmem_jax.envs.synthworld.questions import (LETTERS, TASK_KINDS, TASKS, facts_needed_by, make_questions,
                                                   make_tasks)
from taskmem_jax.envs.synthworld.world import WorldConfig, generate

CONFIG = WorldConfig(num_clips=12)
# Fewer frames per clip, more people: the limits of the config.
SPARSE = WorldConfig(num_clips=8, fps=1, num_people=6, min_facts=3, max_facts=9, max_objects=5)

# --- independent readers --------------------------------------------------------------------------

PALETTE = {"floor": render.FLOOR, "white": render.WHITE, "black": render.BLACK, "skin": render.SKIN,
           **render.COLOURS}
_PALETTE_NAMES = np.array(list(PALETTE))
_PALETTE_RGB = np.array(list(PALETTE.values()), float)


def _nearest_colour(rgb: np.ndarray) -> np.ndarray:
  """float [..., 3] -> palette names [...]."""
  return _PALETTE_NAMES[((rgb[..., None, :] - _PALETTE_RGB) ** 2).sum(-1).argmin(-1)]


def _digit(dark: np.ndarray) -> int:
  matches = [d for d in range(10) if (render.DIGIT_FONT[d] == dark).all()]
  assert len(matches) == 1, f"unreadable digit {dark.astype(int).tolist()}"
  return matches[0]


def read_frame(frame: np.ndarray) -> tuple[dict, dict, dict, int]:
  """uint8 [64, 64, 3] -> (objects {(colour, shape): region}, people {id: region}, carried colours
  {id: colour}, sign digit). Tolerates codec loss: colours are read per 2x2 block as the nearest palette
  colour, digits as grey levels below 128."""
  objects, people, carried, sign = {}, {}, {}, None
  for cell, (y, x) in enumerate(render.CELL_ORIGINS):
    patch = frame[y:y + render.CELL, x:x + render.CELL].astype(float)
    dark = patch.mean(-1) < 128
    region = render.REGIONS[render.cell_region(cell)]
    if cell == render.SIGN_CELL:
      sign = _digit(dark[render.SIGN_DIGIT][::2, ::2])
      continue
    blocks = _nearest_colour(patch.reshape(5, 2, 5, 2, 3).mean((1, 3)))  # [5, 5]
    if (blocks[:, 3:] == "skin").all():  # a person's body
      person = _digit(dark[render.TAG_DIGIT])
      people[person] = region
      if blocks[4, 0] != "floor":
        carried[person] = str(blocks[4, 0])
      continue
    coloured = blocks != "floor"
    if coloured.any():
      colours = set(blocks[coloured].tolist())
      assert len(colours) == 1 and colours <= set(render.COLOURS), f"cell {cell}: colours {colours}"
      shapes = [s for s, mask in render.SHAPES.items() if (mask == coloured).all()]
      assert len(shapes) == 1, f"cell {cell}: unknown shape {coloured.astype(int).tolist()}"
      objects[(colours.pop(), shapes[0])] = region
  return objects, people, carried, sign


def changes(before, after) -> list[tuple]:
  """Every event that turns scene `before` into scene `after`."""
  (objects0, people0, carried0, sign0), (objects1, people1, carried1, sign1) = before, after
  events = [("sign_change", sign0, sign1)] if sign0 != sign1 else []
  gone = {o: r for o, r in objects0.items() if o not in objects1}
  new = {o: r for o, r in objects1.items() if o not in objects0}
  for person in sorted(set(people0) & set(people1)):
    held0, held1 = carried0.get(person), carried1.get(person)
    if held0 == held1:
      continue
    assert held0 is None or held1 is None, f"person {person} swapped {held0} for {held1}"
    if held1 is not None:  # the object of that colour that left the person's region
      (obj,) = [o for o, r in gone.items() if o[0] == held1 and r == people0[person]]
      events.append(("pick_up", person, obj, gone.pop(obj)))
    else:
      (obj,) = [o for o, r in new.items() if o[0] == held0 and r == people1[person]]
      events.append(("put_down", person, obj, new.pop(obj)))
  for what, old, cur in (("object", objects0, objects1), ("person", people0, people1)):
    events += [("disappear", what, k, r) for k, r in old.items() if k not in cur and (what == "person" or k in gone)]
    events += [("appear", what, k, r) for k, r in cur.items() if k not in old and (what == "person" or k in new)]
    events += [("move", what, k, old[k], r) for k, r in cur.items() if k in old and old[k] != r]
  for person in set(people0) ^ set(people1):
    assert person not in carried0 and person not in carried1, f"person {person} came or went carrying"
  return events


def fact_event(fact) -> tuple:
  """A Fact's fields as an event."""
  if fact.kind == "sign_change":
    return ("sign_change", fact.prev_digit, fact.digit)
  if fact.kind in ("pick_up", "put_down"):
    return (fact.kind, fact.person, fact.obj, fact.region)
  what, key = ("person", fact.person) if fact.obj is None else ("object", fact.obj)
  return (fact.kind, what, key, fact.region) + ((fact.to_region,) if fact.kind == "move" else ())


_R = r"((?:north|south)-(?:west|east))"
_O = r"(\w+) (\w+)"
SENTENCES = (
    (rf"a {_O} appears in the {_R}\.", lambda m: ("appear", "object", (m[1], m[2]), m[3])),
    (rf"person (\d) appears in the {_R}\.", lambda m: ("appear", "person", int(m[1]), m[2])),
    (rf"the {_O} disappears from the {_R}\.", lambda m: ("disappear", "object", (m[1], m[2]), m[3])),
    (rf"person (\d) disappears from the {_R}\.", lambda m: ("disappear", "person", int(m[1]), m[2])),
    (rf"the {_O} moves from the {_R} to the {_R}\.", lambda m: ("move", "object", (m[1], m[2]), m[3], m[4])),
    (rf"person (\d) moves from the {_R} to the {_R}\.", lambda m: ("move", "person", int(m[1]), m[2], m[3])),
    (rf"person (\d) picks up the {_O} in the {_R}\.", lambda m: ("pick_up", int(m[1]), (m[2], m[3]), m[4])),
    (rf"person (\d) puts down the {_O} in the {_R}\.", lambda m: ("put_down", int(m[1]), (m[2], m[3]), m[4])),
    (r"the sign changes from (\d) to (\d)\.", lambda m: ("sign_change", int(m[1]), int(m[2]))),
)


def parse_sentence(text: str) -> tuple:
  for pattern, event in SENTENCES:
    match = re.fullmatch(pattern, text)
    if match:
      return event(match)
  raise AssertionError(f"not a fact sentence: {text!r}")


class Observed:
  """A stream as the readers see it: a scene per frame and the events between frames."""

  def __init__(self, stream):
    self.stream = stream
    self.per_clip = stream.config.frames_per_clip
    self.scenes = [read_frame(f) for f in stream.render(0, stream.duration)]
    self.events = [(i, e) for i in range(1, len(self.scenes)) for e in changes(self.scenes[i - 1], self.scenes[i])]

  def in_clips(self, first: int, last: int) -> list[tuple[int, tuple]]:
    return [(i, e) for i, e in self.events if first <= i // self.per_clip <= last]

  def end_of(self, clip: int):
    return self.scenes[(clip + 1) * self.per_clip - 1]


@pytest.fixture(scope="module")
def stream():
  return generate(7, CONFIG)


@pytest.fixture(scope="module")
def observed(stream):
  return Observed(stream)


# --- the world ------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes_, field", [
    (dict(num_clips=0), "num_clips"), (dict(fps=1.25), "fps"), (dict(fps=float("nan")), "fps"),
    (dict(num_people=3), "num_people"), (dict(num_people=10), "num_people"), (dict(min_facts=13), "min_facts"),
    (dict(max_facts=20), "max_facts"), (dict(max_objects=25), "max_objects"), (dict(num_people=4.0), "num_people"),
])
def test_config_errors_name_the_field(changes_, field):
  with pytest.raises(ValueError, match=rf"WorldConfig\.{field}="):
    WorldConfig(**changes_)


def test_generate_errors():
  for seed in (-1, 1.5, "3", True):
    with pytest.raises(ValueError, match="seed="):
      generate(seed, CONFIG)


def test_same_seed_same_stream(stream):
  again = generate(7, CONFIG)
  assert again.facts == stream.facts and np.array_equal(again.cells, stream.cells)
  other = generate(8, CONFIG)
  assert [f.text for f in other.facts] != [f.text for f in stream.facts]


def test_stream_and_questions_do_not_depend_on_the_hash_seed():
  """Iterating over a set of strings would make the stream depend on PYTHONHASHSEED."""
  code = ("import hashlib; from taskmem_jax.envs.synthworld import generate, make_tasks, WorldConfig; "
          "s = generate(3, WorldConfig(num_clips=6)); qs = make_tasks(s, seed=1); "
          "print(hashlib.sha256((repr(s.facts) + repr(qs)).encode() + s.cells.tobytes()).hexdigest())")
  digests = set()
  for hash_seed in ("1", "2"):
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    digests.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               check=True).stdout)
  assert len(digests) == 1


@pytest.mark.parametrize("config", [CONFIG, SPARSE], ids=["default", "sparse"])
def test_fact_schedule(config):
  stream = generate(11, config)
  n = config.frames_per_clip
  assert stream.num_frames == config.num_clips * n and stream.duration == config.num_clips * 10
  counts = collections.Counter(f.clip for f in stream.facts)
  assert all(config.min_facts <= counts[c] <= config.max_facts for c in range(config.num_clips))
  frames = [f.frame for f in stream.facts]
  assert frames == sorted(set(frames)) and frames[0] > 0  # distinct, in order; frame 0 is the initial room
  for f in stream.facts:
    assert f.time == f.frame / config.fps and f.clip == f.frame // n
  assert stream.facts_in(2, 3) == tuple(f for f in stream.facts if f.clip in (2, 3))


def test_sentences_say_what_the_fields_say(stream):
  kinds = collections.Counter(f.kind for f in stream.facts)
  assert set(kinds) == {"appear", "disappear", "move", "pick_up", "put_down", "sign_change"}
  for f in stream.facts:
    assert parse_sentence(f.text) == fact_event(f)
    assert f.clause + "." == f.text
  pick = next(f for f in stream.facts if f.kind == "pick_up")
  assert pick.subject == f"person {pick.person}" and pick.target == f"{pick.colour} {pick.shape}"
  sign = next(f for f in stream.facts if f.kind == "sign_change")
  assert sign.subject == "sign" and sign.target is None


@pytest.mark.parametrize("config", [CONFIG, SPARSE], ids=["default", "sparse"])
def test_frames_show_exactly_the_facts(config):
  """Between consecutive frames, the change read off the pixels is the fact at that frame, or nothing;
  e.g. after "person k picks up X", X is no longer drawn in its region and k shows X's colour."""
  stream = generate(5, config)
  seen = Observed(stream)
  by_frame = collections.defaultdict(list)
  for f in stream.facts:
    by_frame[f.frame].append(fact_event(f))
  for i in range(1, stream.num_frames):
    assert [e for j, e in seen.events if j == i] == by_frame[i], f"frame {i}"
  # Stream.scene (read from the sprite codes) agrees with the pixels.
  for i in range(0, stream.num_frames, 7):
    scene = stream.scene(i)
    carried = {k: obj[0] for k, obj in scene.carrying.items()}
    assert (scene.objects, scene.people, carried, scene.sign) == seen.scenes[i]


def test_render_windows(stream):
  frames = stream.render(10.2, 12)  # frame times 10.5, 11.0, 11.5
  np.testing.assert_array_equal(frames, stream.render_frames([21, 22, 23]))
  assert stream.render(115, 1000).shape == (10, 64, 64, 3)  # clamped to the duration
  for t0, t1 in ((-1, 5), (120, 130), (5, 5), (float("nan"), 3)):
    with pytest.raises(ValueError, match="render window"):
      stream.render(t0, t1)
  with pytest.raises(ValueError, match="frame index 240"):
    stream.render_frames([3, 240])
  with pytest.raises(ValueError, match="clip=12"):
    stream.clip_span(12)


# --- questions ------------------------------------------------------------------------------------


def _one(items, what):
  assert len(items) == 1, f"{what}: {len(items)} matches"
  return items[0]


def _object_event(clause: str):
  """An attribute question's clause -> a function from an event to its object if the event fits."""
  patterns = (
      (rf"appeared in the {_R}", lambda m, e: e[:2] == ("appear", "object") and e[3] == m[1]),
      (rf"disappeared from the {_R}", lambda m, e: e[:2] == ("disappear", "object") and e[3] == m[1]),
      (rf"moved from the {_R} to the {_R}", lambda m, e: e[:2] == ("move", "object") and e[3:] == (m[1], m[2])),
      (r"person (\d) picked up", lambda m, e: e[:2] == ("pick_up", int(m[1]))),
      (r"person (\d) put down", lambda m, e: e[:2] == ("put_down", int(m[1]))),
  )
  for pattern, fits in patterns:
    match = re.fullmatch(pattern, clause)
    if match:
      return lambda e: e[2] if fits(match, e) else None
  raise AssertionError(f"unknown clause {clause!r}")


def _counts(who: str, verb: str, e: tuple) -> bool:
  if who == "the sign":
    return e[0] == "sign_change"
  if verb in ("pick up an object", "put down an object"):
    kind = verb.split(" ")[0] + "_" + verb.split(" ")[1]
    return e[0] == kind and (who == "a person" or e[1] == int(who.split(" ")[1]))
  if who == "an object":
    return e[:2] == (verb, "object")
  if who == "a person":
    return e[:2] == (verb, "person")
  return e[:3] == (verb, "person", int(who.split(" ")[1]))


def answer_from_frames(q, seen: Observed) -> str:
  """The answer to q, from the question's text and the frames alone."""
  text = q.text
  if m := re.fullmatch(r"what (colour|shape) was the (\w+)(?: object)? that (.+) in clip (\d+)\?", text):
    attribute, known, clause, clip = m[1], m[2], m[3], int(m[4])
    fits = _object_event(clause)
    objects = [fits(e) for _, e in seen.in_clips(clip, clip) if fits(e)]
    index = 1 if attribute == "colour" else 0  # the known attribute's position in (colour, shape)
    obj = _one([o for o in objects if o[index] == known], text)
    return obj[0] if attribute == "colour" else obj[1]
  if m := re.fullmatch(r"how many times did (.+?) (appear|disappear|move|pick up an object|put down an object|change)"
                       r" in (?:clip (\d+)|clips (\d+) to (\d+))\?", text):
    first, last = (int(m[3]), int(m[3])) if m[3] else (int(m[4]), int(m[5]))
    return str(sum(_counts(m[1], m[2], e) for _, e in seen.in_clips(first, last)))
  if m := re.fullmatch(r"where was the (\w+) (\w+) at the end of clip (\d+)\?", text):
    return seen.end_of(int(m[3]))[0][(m[1], m[2])]
  if m := re.fullmatch(r"where was person (\d) at the end of clip (\d+)\?", text):
    return seen.end_of(int(m[2]))[1][int(m[1])]
  if m := re.fullmatch(r"(where|who|what) did (?:person (\d) )?(pick up|put down)(?: the (\w+) (\w+))? in clip (\d+)\?",
                       text):
    kind, clip = m[3].replace(" ", "_"), int(m[6])
    events = [e for _, e in seen.in_clips(clip, clip) if e[0] == kind]
    if m[1] == "where":
      return _one([e for e in events if e[1:3] == (int(m[2]), (m[4], m[5]))], text)[3]
    return f"the {' '.join(_one([e for e in events if e[1] == int(m[2])], text)[2])}"
  if m := re.fullmatch(r"who (picked up|put down) the (\w+) (\w+) in clip (\d+)\?", text):
    kind = "pick_up" if m[1] == "picked up" else "put_down"
    events = [e for _, e in seen.in_clips(int(m[4]), int(m[4])) if e[0] == kind and e[2] == (m[2], m[3])]
    return f"person {_one(events, text)[1]}"
  if m := re.fullmatch(r"what digit did the sign show at the end of clip (\d+)\?", text):
    return str(seen.end_of(int(m[1]))[3])
  if m := re.fullmatch(r"what digit did the sign show before it changed to (\d) in clip (\d+)\?", text):
    events = [e for _, e in seen.in_clips(int(m[2]), int(m[2])) if e[0] == "sign_change" and e[2] == int(m[1])]
    return str(_one(events, text)[1])
  if m := re.fullmatch(r"which of these happened (first|last) in (?:clip (\d+)|clips (\d+) to (\d+))\?", text):
    first, last = (int(m[2]), int(m[2])) if m[2] else (int(m[3]), int(m[4]))
    events = seen.in_clips(first, last)
    frames = {o: _one([i for i, e in events if e == parse_sentence(o + ".")], o) for o in q.options}
    return (min if m[1] == "first" else max)(frames, key=frames.get)
  raise AssertionError(f"unknown question {text!r}")


@pytest.fixture(scope="module")
def tasks(stream):
  return make_tasks(stream, seed=2)  # every question the stream supports


def test_every_task_has_questions(tasks):
  assert list(tasks) == list(TASKS)
  for task, questions in tasks.items():
    assert len(questions) >= 10, task


def test_questions_are_well_formed(stream, tasks):
  for task, questions in tasks.items():
    assert [q.asked_after_clip for q in questions] == sorted(q.asked_after_clip for q in questions)
    for q in questions:
      assert q.task == task and len(q.options) == 4 and len(set(q.options)) == 4, q
      assert q.answer in LETTERS and q.answer_text == q.options[LETTERS.index(q.answer)]
      assert list(q.about_clips) == sorted(set(q.about_clips)) and 0 <= q.about_clips[0]
      assert max(q.about_clips) <= q.asked_after_clip <= min(max(q.about_clips) + 2, stream.num_clips - 1)
      assert q.needed_facts and {f.clip for f in q.needed_facts} <= set(q.about_clips)
      assert {f.kind for f in q.needed_facts} <= TASK_KINDS[task]
      assert q.prompt().splitlines() == [q.text] + [f"{letter}. {o}" for letter, o in zip(LETTERS, q.options)]
      if task == "temporal":
        assert sorted(q.options) == sorted(f.clause for f in q.needed_facts)


def test_answers_recomputed_from_the_frames(tasks, observed):
  for task, questions in tasks.items():
    for q in questions:
      assert answer_from_frames(q, observed) == q.answer_text, (task, q)
      # Exactly one option is true: the recomputed answer is one of the four, and they are distinct.
      assert q.options.count(q.answer_text) == 1


def test_answer_letters_and_values_are_spread(tasks):
  letters = collections.Counter(q.answer for questions in tasks.values() for q in questions)
  total = sum(letters.values())
  assert all(0.15 < letters[x] / total < 0.35 for x in LETTERS), letters
  ranks = collections.Counter(sorted(q.options, key=int).index(q.answer_text) for q in tasks["counting"])
  assert len(ranks) == 4, ranks  # counting answers are not always the middle value


def test_sampling_is_deterministic_and_bounded(stream, tasks):
  picked = make_questions(stream, "ocr", 5, seed=2)
  assert picked == make_questions(stream, "ocr", 5, seed=2) and len(picked) == 5
  assert {q.text for q in picked} <= {q.text for q in tasks["ocr"]}
  assert make_questions(stream, "ocr", 5, seed=3) != picked
  with pytest.raises(ValueError, match=rf"supports {len(tasks['ocr'])} ocr questions; num=1000"):
    make_questions(stream, "ocr", 1000)
  with pytest.raises(ValueError, match="task='colour'"):
    make_questions(stream, "colour")
  with pytest.raises(ValueError, match="num=0"):
    make_questions(stream, "ocr", 0)
  with pytest.raises(ValueError, match="max_delay=-1"):
    make_questions(stream, "ocr", max_delay=-1)
  with pytest.raises(ValueError, match="seed=-2"):
    make_questions(stream, "ocr", seed=-2)


def test_facts_needed_by(tasks):
  needed = facts_needed_by(tasks["ocr"])
  assert needed == sorted(set(needed), key=lambda f: f.time)
  assert {f.kind for f in needed} == {"sign_change"}
  assert set(needed) == {f for q in tasks["ocr"] for f in q.needed_facts}
