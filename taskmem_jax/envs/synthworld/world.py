"""SynthWorld dynamics: a seeded stream of events in a small room, each event a ground-truth fact.

The room (render.py draws it) has four regions. Objects (colour x shape, at most one of each kind at a
time) and people (ids 1..K, shown on identity tags) stand in cells of a region; a sign shows a digit.
The room starts empty, with the sign showing a random digit. Every change is an event at a frame time:
appear, disappear, move (to another region), pick up (a person takes an object from their region and
carries it; a carried object moves with its carrier and is not on the floor), put down (into the
carrier's region), sign change. Each clip of CLIP_SECONDS holds between min_facts and max_facts
events, at distinct frames, so facts are totally ordered in time and each one is exactly the
difference between its frame and the frame before. Frame 0 shows the initial room and has no event.

Each event is a Fact with a canonical English sentence built from FACT_TEMPLATES and the closed word
lists (COLOURS, SHAPES, REGIONS, digits): lower case, ending with ".", never starting with a digit.
Same seed and config -> identical stream (a numpy Generator seeded once; no iteration over sets).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from taskmem_jax.envs.synthworld.render import (CELLS_PER_REGION, COLOURS, NUM_CELLS, REGIONS, RENDERS, SHAPES,
                                                SIGN_CELL,
                                                Codebook, cell_region)

CLIP_SECONDS = 10
KINDS = ("appear", "disappear", "move", "pick_up", "put_down", "sign_change")

# (kind, what changes) -> sentence. Fields: the Fact's fields.
FACT_TEMPLATES = {
    ("appear", "object"): "a {colour} {shape} appears in the {region}.",
    ("appear", "person"): "person {person} appears in the {region}.",
    ("disappear", "object"): "the {colour} {shape} disappears from the {region}.",
    ("disappear", "person"): "person {person} disappears from the {region}.",
    ("move", "object"): "the {colour} {shape} moves from the {region} to the {to_region}.",
    ("move", "person"): "person {person} moves from the {region} to the {to_region}.",
    ("pick_up", "person"): "person {person} picks up the {colour} {shape} in the {region}.",
    ("put_down", "person"): "person {person} puts down the {colour} {shape} in the {region}.",
    ("sign_change", "sign"): "the sign changes from {prev_digit} to {digit}.",
}


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """num_clips clips of CLIP_SECONDS at `fps` frames per second; min_facts..max_facts events per clip;
  num_people people (ids 1..num_people, 4..9: a tag shows one digit and action questions need four
  people to choose from); at most max_objects objects in the room (on the floor or carried)."""
  num_clips: int = 30
  fps: float = 2.0
  num_people: int = 4
  min_facts: int = 6
  max_facts: int = 12
  max_objects: int = 8
  render: str = "sprites"  # render.RENDERS: the 64x64 sprite room, or the 96x96 schematic (one patch per cell)
  # Events only at odd frames. Clips start on even frames, so at fps 2 (the processor's sampling rate)
  # every event's before and after frames are the two frames of one 2-frame temporal patch: the vision
  # tower sees each change inside one patch instead of across two (what a tiny from-scratch tower can read).
  patch_aligned: bool = False

  def __post_init__(self):
    def fail(field, why):
      raise ValueError(f"WorldConfig.{field}={getattr(self, field)!r}: {why}")

    for field in ("num_clips", "num_people", "min_facts", "max_facts", "max_objects"):
      value = getattr(self, field)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(field, "must be a positive integer")
    if not (isinstance(self.fps, numbers.Real) and math.isfinite(self.fps) and self.fps > 0):
      fail("fps", "must be a positive number")
    if abs(self.fps * CLIP_SECONDS - round(self.fps * CLIP_SECONDS)) > 1e-9:
      fail("fps", f"fps * {CLIP_SECONDS} s must be a whole number of frames per clip")
    if not 4 <= self.num_people <= 9:
      fail("num_people", "must be in [4, 9]")
    if self.min_facts > self.max_facts:
      fail("min_facts", f"must be <= max_facts={self.max_facts}")
    # Clip 0 loses frame 0, and every event needs a frame of its own.
    if self.max_facts > self.frames_per_clip - 1:
      fail("max_facts", f"must be <= frames per clip - 1 = {self.frames_per_clip - 1} at fps={self.fps}")
    if self.patch_aligned and self.max_facts > self.frames_per_clip // 2:
      fail("max_facts", f"must be <= {self.frames_per_clip // 2} (the odd frames of a clip) with patch_aligned")
    if self.patch_aligned and self.frames_per_clip % 2:
      fail("patch_aligned", f"needs an even number of frames per clip, got {self.frames_per_clip} at fps={self.fps}")
    if self.render not in RENDERS:
      fail("render", f"must be one of {RENDERS}")
    if self.max_objects > len(COLOURS) * len(SHAPES):
      fail("max_objects", f"must be <= {len(COLOURS) * len(SHAPES)} (one of each colour and shape)")

  @property
  def frames_per_clip(self) -> int:
    return round(self.fps * CLIP_SECONDS)


@dataclasses.dataclass(frozen=True)
class Fact:
  """One event. time = frame / fps seconds; clip = the 10-s clip holding it.

  person: the person who appears, disappears, moves, picks up or puts down; colour and shape: the
  object that appears, disappears, moves, or is picked up or put down; region: where it happens (the
  origin of a move); to_region: the destination of a move; prev_digit -> digit: a sign change.
  text: the canonical sentence (FACT_TEMPLATES).
  """
  time: float
  frame: int
  clip: int
  kind: str
  person: int | None
  colour: str | None
  shape: str | None
  region: str | None
  to_region: str | None
  digit: int | None
  prev_digit: int | None
  text: str

  @property
  def obj(self) -> tuple[str, str] | None:
    """(colour, shape) of the object involved, if any."""
    return None if self.colour is None else (self.colour, self.shape)

  @property
  def subject(self) -> str:
    """What acts or changes: "person 2", "red circle" or "sign"."""
    if self.kind == "sign_change":
      return "sign"
    return f"person {self.person}" if self.person is not None else f"{self.colour} {self.shape}"

  @property
  def target(self) -> str | None:
    """What a person picks up or puts down: "red circle"; None for other kinds."""
    return f"{self.colour} {self.shape}" if self.kind in ("pick_up", "put_down") else None

  @property
  def clause(self) -> str:
    """The sentence without its final period (how temporal questions list events)."""
    return self.text[:-1]


@dataclasses.dataclass(frozen=True)
class Scene:
  """What one frame shows. objects: (colour, shape) -> region, on the floor; people: id -> region;
  carrying: id -> (colour, shape); sign: the digit shown."""
  objects: dict
  people: dict
  carrying: dict
  sign: int


@dataclasses.dataclass(frozen=True, eq=False)
class World:
  """A generated stream. cells: int16 [num_frames, NUM_CELLS], the sprite code of every cell in every
  frame (codebook.entity reads a code); facts: in time order."""
  seed: int
  config: WorldConfig
  facts: tuple[Fact, ...]
  cells: np.ndarray
  codebook: Codebook

  @property
  def fps(self) -> float:
    return float(self.config.fps)

  @property
  def num_frames(self) -> int:
    return len(self.cells)

  @property
  def num_clips(self) -> int:
    return self.config.num_clips

  @property
  def duration(self) -> float:
    return float(self.num_clips * CLIP_SECONDS)

  def clip_span(self, clip: int) -> tuple[float, float]:
    """[start, end) seconds of `clip`."""
    self._check_clip(clip)
    return float(clip * CLIP_SECONDS), float((clip + 1) * CLIP_SECONDS)

  def clip_frames(self, clip: int) -> range:
    """Frame indices of `clip`."""
    self._check_clip(clip)
    n = self.config.frames_per_clip
    return range(clip * n, (clip + 1) * n)

  def facts_in(self, *clips: int) -> tuple[Fact, ...]:
    """The facts of the given clips, in time order."""
    for clip in clips:
      self._check_clip(clip)
    return tuple(f for f in self.facts if f.clip in clips)

  def render_frames(self, indices) -> np.ndarray:
    """Frame indices [T] -> uint8 [T, 64, 64, 3] (or [T, 96, 96, 3] for the schematic render)."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    bad = indices[(indices < 0) | (indices >= self.num_frames)]
    if bad.size:
      raise ValueError(f"frame index {int(bad[0])}: the stream has frames 0..{self.num_frames - 1}")
    return self.codebook.render(self.cells[indices], self.config.render)

  def render(self, t0: float, t1: float) -> np.ndarray:
    """uint8 [T, 64, 64, 3]: every frame whose time (index / fps) lies in [t0, t1), t1 clamped to the
    duration; the frames read_video decodes for that window before it samples them."""
    if not (0 <= t0 < self.duration and t1 > t0):  # `not` so that NaN fails too
      raise ValueError(f"render window [{t0}, {t1}): need 0 <= t0 < duration={self.duration} and t1 > t0")
    times = np.arange(self.num_frames) / self.fps
    first, stop = np.searchsorted(times, [t0, min(t1, self.duration)], side="left")
    return self.render_frames(np.arange(first, stop))

  def scene(self, frame: int) -> Scene:
    """What frame `frame` shows, read from its sprite codes."""
    if not 0 <= frame < self.num_frames:
      raise ValueError(f"frame={frame}: the stream has frames 0..{self.num_frames - 1}")
    objects, people, carrying, sign = {}, {}, {}, None
    for cell, code in enumerate(self.cells[frame]):
      entity = self.codebook.entity(code)
      region = REGIONS[cell_region(cell)]
      if entity[0] == "object":
        objects[entity[1:]] = region
      elif entity[0] == "person":
        people[entity[1]] = region
        if entity[2] is not None:
          carrying[entity[1]] = entity[2]
      elif entity[0] == "sign":
        sign = entity[1]
    return Scene(objects, people, carrying, sign)

  def _check_clip(self, clip) -> None:
    if not (isinstance(clip, numbers.Integral) and 0 <= clip < self.num_clips):
      raise ValueError(f"clip={clip!r}: the stream has clips 0..{self.num_clips - 1}")


POLICY_FILE = "synthworld.json"  # in a policy checkpoint folder: the WorldConfig fields it was trained on
POLICY_FIELDS = ("render", "patch_aligned", "min_facts", "max_facts", "fps", "num_people", "max_objects")


def policy_world(checkpoint_dir: str | None) -> dict:
  """The world a SynthWorld policy was trained on: the WorldConfig fields (POLICY_FIELDS) that
  checkpoint_dir/synthworld.json records; {} without the file (or for None): the default world."""
  import json
  import os

  path = os.path.join(checkpoint_dir or "", POLICY_FILE)
  if not checkpoint_dir or not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    try:
      recorded = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(recorded, dict):
    raise ValueError(f"{path}: expected a JSON object of WorldConfig fields, got {type(recorded).__name__}")
  unknown = sorted(set(recorded) - set(POLICY_FIELDS))
  if unknown:
    raise ValueError(f"{path}: unknown field {unknown[0]!r}; expected some of {POLICY_FIELDS}")
  try:
    WorldConfig(**recorded)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: {e}") from e
  return recorded


def policy_world_config(checkpoint_dir: str | None, **overrides) -> WorldConfig:
  """WorldConfig of the policy's world (policy_world), with `overrides` (e.g. num_clips) on top."""
  return WorldConfig(**{**policy_world(checkpoint_dir), **overrides})


def policy_render(checkpoint_dir: str | None) -> str:
  """The render a SynthWorld policy was trained on ("sprites" without a synthworld.json)."""
  return policy_world(checkpoint_dir).get("render", "sprites")


def generate(seed: int, config: WorldConfig = WorldConfig()) -> World:
  """The stream of `seed` (an integer >= 0) under `config`."""
  if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
    raise ValueError(f"seed={seed!r}: must be an integer >= 0")
  if not isinstance(config, WorldConfig):
    raise TypeError(f"config: expected a WorldConfig, got {type(config).__name__}")
  rng = np.random.default_rng(int(seed))
  codebook = Codebook(config.num_people)
  room = _Room(config, codebook, int(rng.integers(10)))
  n = config.frames_per_clip
  cells = np.empty((config.num_clips * n, NUM_CELLS), np.int16)
  facts = []
  for clip in range(config.num_clips):
    frames = range(clip * n, (clip + 1) * n)
    count = int(rng.integers(config.min_facts, config.max_facts + 1))
    candidates = frames[1::2] if config.patch_aligned else frames[1 if clip == 0 else 0:]
    events = set(rng.choice(candidates, count, replace=False).tolist())
    for frame in frames:
      if frame in events:
        facts.append(_fact(frame, config, room.step(rng)))
      cells[frame] = room.codes
  cells.setflags(write=False)  # streams are shared by rollouts, questions and readers
  return World(int(seed), config, tuple(facts), cells, codebook)


def _fact(frame: int, config: WorldConfig, fields: dict) -> Fact:
  values = dict(person=None, colour=None, shape=None, region=None, to_region=None, digit=None, prev_digit=None)
  values.update(fields)
  kind = values.pop("kind")
  what = "sign" if kind == "sign_change" else "person" if values["person"] is not None else "object"
  text = FACT_TEMPLATES[(kind, what)].format(**values)
  return Fact(time=frame / config.fps, frame=int(frame), clip=int(frame) // config.frames_per_clip, kind=kind,
              text=text, **values)


class _Room:
  """The mutable state behind generate: who stands in which cell, who carries what, the sign."""

  def __init__(self, config: WorldConfig, codebook: Codebook, sign: int):
    self.config = config
    self.codebook = codebook
    self.occupant = {}  # cell -> ("object", (colour, shape)) or ("person", id)
    self.carrying = {}  # person id -> (colour, shape)
    self.sign = sign
    self.codes = np.zeros(NUM_CELLS, np.int16)
    self.codes[SIGN_CELL] = codebook.sign(sign)

  # --- queries (sorted lists only: set order would depend on the hash seed) ---------------------

  def cell_of(self, entity) -> int:
    return next(c for c, e in self.occupant.items() if e == entity)

  def region_of(self, entity) -> int:
    return cell_region(self.cell_of(entity))

  def free_cells(self, region: int) -> list[int]:
    cells = range(region * CELLS_PER_REGION, (region + 1) * CELLS_PER_REGION)
    return [c for c in cells if c != SIGN_CELL and c not in self.occupant]

  def on_floor(self, kind: str) -> list:
    return sorted(e[1] for e in self.occupant.values() if e[0] == kind)

  # --- events -----------------------------------------------------------------------------------

  def step(self, rng: np.random.Generator) -> dict:
    """Picks a feasible event at random, applies it, and returns its Fact fields."""
    cfg = self.config
    objects, people = self.on_floor("object"), self.on_floor("person")
    in_room = len(objects) + len(self.carrying)
    unused = [o for o in self.codebook.objects if o not in objects and o not in self.carrying.values()]
    absent = [k for k in range(1, cfg.num_people + 1) if k not in people]
    open_regions = [r for r in range(len(REGIONS)) if self.free_cells(r)]
    idle = [k for k in people if k not in self.carrying]
    pickable = [(k, o) for k in idle for o in objects if self.region_of(("person", k)) == self.region_of(("object", o))]
    droppable = [k for k in sorted(self.carrying) if self.free_cells(self.region_of(("person", k)))]
    movable = lambda entity: [r for r in open_regions if r != self.region_of(entity)]

    # Weights keep a few objects and people around, so that every kind of event keeps happening.
    options = [(1.5, "sign_change", None)]
    if in_room < cfg.max_objects and open_regions and unused:
      options.append((3.0 if in_room < cfg.max_objects / 2 else 1.0, "appear", "object"))
    if objects:
      options.append((0.5 + 2.0 * in_room / cfg.max_objects, "disappear", "object"))
    if absent and open_regions:
      options.append((3.0 if len(people) < cfg.num_people - 1 else 0.7, "appear", "person"))
    if len(idle) > 1:
      options.append((0.7, "disappear", "person"))
    if any(movable(("object", o)) for o in objects):
      options.append((2.0, "move", "object"))
    if any(movable(("person", k)) for k in people):
      options.append((3.0, "move", "person"))
    if pickable:
      options.append((3.0, "pick_up", "person"))
    if droppable:
      options.append((3.0, "put_down", "person"))
    weights = np.array([w for w, _, _ in options])
    _, kind, what = options[rng.choice(len(options), p=weights / weights.sum())]
    pick = lambda items: items[int(rng.integers(len(items)))]

    if kind == "sign_change":
      prev, self.sign = self.sign, pick([d for d in range(10) if d != self.sign])
      self.codes[SIGN_CELL] = self.codebook.sign(self.sign)
      return dict(kind=kind, prev_digit=prev, digit=self.sign)
    if kind == "appear":
      entity = ("object", pick(unused)) if what == "object" else ("person", pick(absent))
      region = pick(open_regions)
      self._place(entity, pick(self.free_cells(region)))
      return dict(kind=kind, region=REGIONS[region], **self._fields(entity))
    if kind == "disappear":
      entity = ("object", pick(objects)) if what == "object" else ("person", pick(idle))
      region = self.region_of(entity)
      self._remove(entity)
      return dict(kind=kind, region=REGIONS[region], **self._fields(entity))
    if kind == "move":
      candidates = [("object", o) for o in objects] if what == "object" else [("person", k) for k in people]
      entity = pick([e for e in candidates if movable(e)])
      region, to = self.region_of(entity), pick(movable(entity))
      self._remove(entity)
      self._place(entity, pick(self.free_cells(to)))
      return dict(kind=kind, region=REGIONS[region], to_region=REGIONS[to], **self._fields(entity))
    if kind == "pick_up":
      person, obj = pick(pickable)
      region = self.region_of(("object", obj))
      self._remove(("object", obj))
      self.carrying[person] = obj
      self._redraw(("person", person))
      return dict(kind=kind, person=person, colour=obj[0], shape=obj[1], region=REGIONS[region])
    person = pick(droppable)
    region = self.region_of(("person", person))
    obj = self.carrying.pop(person)
    self._redraw(("person", person))
    self._place(("object", obj), pick(self.free_cells(region)))
    return dict(kind=kind, person=person, colour=obj[0], shape=obj[1], region=REGIONS[region])

  def _fields(self, entity) -> dict:
    if entity[0] == "person":
      return dict(person=entity[1])
    return dict(colour=entity[1][0], shape=entity[1][1])

  def _code(self, entity) -> int:
    if entity[0] == "person":
      return self.codebook.person(entity[1], self.carrying.get(entity[1]))
    return self.codebook.object(*entity[1])

  def _place(self, entity, cell: int) -> None:
    self.occupant[cell] = entity
    self.codes[cell] = self._code(entity)

  def _remove(self, entity) -> None:
    cell = self.cell_of(entity)
    del self.occupant[cell]
    self.codes[cell] = 0

  def _redraw(self, entity) -> None:
    self.codes[self.cell_of(entity)] = self._code(entity)
