"""How SynthWorld looks: the room layout, the palette, the 5x3 digit font, the sprites and the codebook.

Layout of a 64x64 frame: four 32x32 regions in a 2x2 grid (REGIONS, row-major from the north-west).
Each region has a 2-px grey wall along its top and left edges and 3x3 cells of 10x10 px; cell 0 (the
top-left cell of the north-west region) holds the sign, every other cell holds nothing, one object or
one person. A frame is therefore fully described by one sprite code per cell: int [NUM_CELLS].

Sprites (10x10 px):
- object: its shape (SHAPES) in its colour (COLOURS) on the floor;
- person: a white identity tag with the person's id in black at the top-left (the stand-in for the
  paper's ``<face_k>`` boxes), a skin-coloured body to its right, and below the tag a strip in the
  colour of the object the person carries (floor colour when empty-handed);
- sign: white, with its digit in black at twice the font size.

A second, schematic rendering (RENDERS, WorldConfig.render = "schematic") draws the same cells as a 6x6
grid of 16-px blocks (96x96 frames), one block per cell, so that each cell is exactly one 16-px patch
of the vision tower: an object is its shape mask at 3x scale in its colour; a person is a grey level
for its id over the colour of what it carries (skin when empty-handed); the sign is a grey level for its
digit. The world, its facts and its questions are the same; only the pixels are easier to read. It
exists because reading 10-px sprites that straddle 16-px patches takes a tiny from-scratch vision tower
more training than a CPU session gives (measured in experiments/make_sft_data.py).

H.264 in yuv420p stores colour at half resolution, so coloured areas are drawn in 2x2 blocks aligned to
even pixels and fine detail (digits) only in black and white, whose chroma is neutral. Decoding still
interpolates chroma across block edges, so colour edges blur by a pixel or two (see video.py).
"""

from __future__ import annotations

import numpy as np

FRAME_SIZE = 64
RENDERS = ("sprites", "schematic")
SCHEMATIC_CELL = 16  # px: one vision patch
SCHEMATIC_SIZE = 6 * SCHEMATIC_CELL
CELL = 10  # px
REGION = 32  # px
WALL = 2  # px
CELLS_PER_REGION = 9
NUM_CELLS = 4 * CELLS_PER_REGION
SIGN_CELL = 0

REGIONS = ("north-west", "north-east", "south-west", "south-east")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 230),
    "yellow": (235, 215, 40), "purple": (170, 70, 200), "orange": (245, 140, 30),
}
FLOOR = (40, 40, 40)
WALL_COLOUR = (110, 110, 110)
SKIN = (240, 185, 150)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def _mask(rows: str) -> np.ndarray:
  return np.array([[c == "#" for c in row] for row in rows.split()], bool)


# Shapes on a 5x5 grid of 2x2-px blocks.
SHAPES = {
    "square": _mask("##### ##### ##### ##### #####"),
    "circle": _mask(".###. ##### ##### ##### .###."),
    "triangle": _mask("..#.. .###. .###. ##### #####"),
    "cross": _mask("..#.. ..#.. ##### ..#.. ..#.."),
}
# 5 rows x 3 columns per digit.
DIGIT_FONT = np.stack([_mask(rows) for rows in (
    "### #.# #.# #.# ###", ".#. ##. .#. .#. ###", "### ..# ### #.. ###", "### ..# ### ..# ###",
    "#.# #.# ### ..# ..#", "### #.. ### ..# ###", "### #.. ### #.# ###", "### ..# ..# ..# ..#",
    "### #.# ### #.# ###", "### #.# ### ..# ###")])

# Person sprite parts, in px within the cell: (rows, cols) slices.
TAG = (slice(0, 8), slice(0, 6))
TAG_DIGIT = (slice(1, 6), slice(1, 4))
BODY = (slice(0, 10), slice(6, 10))
CARRIED = (slice(8, 10), slice(0, 6))
# Sign digit at 2x: 10 rows x 6 columns, centred.
SIGN_DIGIT = (slice(0, 10), slice(2, 8))


def cell_region(cell: int) -> int:
  """Index into REGIONS of the region holding `cell`."""
  return cell // CELLS_PER_REGION


def cell_origin(cell: int) -> tuple[int, int]:
  """(y, x) of the cell's top-left pixel."""
  region, j = divmod(cell, CELLS_PER_REGION)
  return (region // 2) * REGION + WALL + (j // 3) * CELL, (region % 2) * REGION + WALL + (j % 3) * CELL


CELL_ORIGINS = np.array([cell_origin(c) for c in range(NUM_CELLS)])  # int [NUM_CELLS, 2]


def schematic_origin(cell: int) -> tuple[int, int]:
  """(y, x) of the cell's block in the schematic 6x6 grid (regions 2x2, cells 3x3 within each)."""
  region, j = divmod(cell, CELLS_PER_REGION)
  return ((region // 2) * 3 + j // 3) * SCHEMATIC_CELL, ((region % 2) * 3 + j % 3) * SCHEMATIC_CELL


SCHEMATIC_ORIGINS = np.array([schematic_origin(c) for c in range(NUM_CELLS)])  # int [NUM_CELLS, 2]


def background() -> np.ndarray:
  """uint8 [FRAME_SIZE, FRAME_SIZE, 3]: the empty room (floor and walls)."""
  frame = np.empty((FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
  frame[:] = FLOOR
  for start in range(0, FRAME_SIZE, REGION):
    frame[start:start + WALL, :] = WALL_COLOUR
    frame[:, start:start + WALL] = WALL_COLOUR
  return frame


class Codebook:
  """Sprite codes for one world: what each code shows, and the sprite table to render them.

  Codes: 0 empty; then one per object (colour, shape); then one per (person, carried object or
  nothing); then one per sign digit. Entities read back by `entity`: ("empty",),
  ("object", colour, shape), ("person", id, (colour, shape) or None), ("sign", digit).
  """

  def __init__(self, num_people: int):
    self.num_people = num_people
    self.objects = [(c, s) for c in COLOURS for s in SHAPES]
    self._object_index = {obj: i for i, obj in enumerate(self.objects)}
    self._person_base = 1 + len(self.objects)
    self._sign_base = self._person_base + num_people * (1 + len(self.objects))
    self.num_codes = self._sign_base + 10
    self.sprites = np.stack([self._draw(code) for code in range(self.num_codes)])  # uint8 [codes, 10, 10, 3]
    self.blocks = np.stack([self._block(code) for code in range(self.num_codes)])  # uint8 [codes, 16, 16, 3]

  def object(self, colour: str, shape: str) -> int:
    return 1 + self._object_index[(colour, shape)]

  def person(self, person: int, carrying: tuple[str, str] | None = None) -> int:
    carried = 0 if carrying is None else 1 + self._object_index[carrying]
    return self._person_base + (person - 1) * (1 + len(self.objects)) + carried

  def sign(self, digit: int) -> int:
    return self._sign_base + digit

  def entity(self, code: int) -> tuple:
    code = int(code)
    if not 0 <= code < self.num_codes:
      raise ValueError(f"sprite code {code}: must be in [0, {self.num_codes})")
    if code == 0:
      return ("empty",)
    if code < self._person_base:
      return ("object", *self.objects[code - 1])
    if code < self._sign_base:
      person, carried = divmod(code - self._person_base, 1 + len(self.objects))
      return ("person", person + 1, self.objects[carried - 1] if carried else None)
    return ("sign", code - self._sign_base)

  def _draw(self, code: int) -> np.ndarray:
    sprite = np.empty((CELL, CELL, 3), np.uint8)
    sprite[:] = FLOOR
    entity = self.entity(code)
    if entity[0] == "object":
      sprite[np.kron(SHAPES[entity[2]], np.ones((2, 2), bool))] = COLOURS[entity[1]]
    elif entity[0] == "person":
      sprite[TAG] = WHITE
      sprite[TAG_DIGIT][DIGIT_FONT[entity[1]]] = BLACK
      sprite[BODY] = SKIN
      if entity[2] is not None:
        sprite[CARRIED] = COLOURS[entity[2][0]]
    elif entity[0] == "sign":
      sprite[:] = WHITE
      sprite[SIGN_DIGIT][np.kron(DIGIT_FONT[entity[1]], np.ones((2, 2), bool))] = BLACK
    return sprite

  def _block(self, code: int) -> np.ndarray:
    """The schematic 16-px block of a code (module docstring)."""
    block = np.empty((SCHEMATIC_CELL, SCHEMATIC_CELL, 3), np.uint8)
    block[:] = FLOOR
    entity = self.entity(code)
    if entity[0] == "object":
      block[:15, :15][np.kron(SHAPES[entity[2]], np.ones((3, 3), bool))] = COLOURS[entity[1]]
    elif entity[0] == "person":
      block[:8] = 60 + 20 * entity[1]
      block[8:] = SKIN if entity[2] is None else COLOURS[entity[2][0]]
    elif entity[0] == "sign":
      block[:] = 30 + 22 * entity[1]
    return block

  def render(self, cells: np.ndarray, mode: str = "sprites") -> np.ndarray:
    """int [T, NUM_CELLS] sprite codes -> uint8 frames: [T, 64, 64, 3] for "sprites", [T, 96, 96, 3] for
    "schematic"."""
    cells = np.asarray(cells)
    if cells.ndim != 2 or cells.shape[1] != NUM_CELLS:
      raise ValueError(f"cells: expected int [T, {NUM_CELLS}], got shape {cells.shape}")
    if mode == "schematic":
      frames = np.empty((len(cells), SCHEMATIC_SIZE, SCHEMATIC_SIZE, 3), np.uint8)
      rows = SCHEMATIC_ORIGINS[:, 0, None, None] + np.arange(SCHEMATIC_CELL)[None, :, None]
      cols = SCHEMATIC_ORIGINS[:, 1, None, None] + np.arange(SCHEMATIC_CELL)[None, None, :]
      frames[:, rows, cols] = self.blocks[cells]
      return frames
    if mode != "sprites":
      raise ValueError(f"render mode {mode!r}: expected one of {RENDERS}")
    frames = np.repeat(background()[None], len(cells), axis=0)
    rows = CELL_ORIGINS[:, 0, None, None] + np.arange(CELL)[None, :, None]  # [cells, 10, 1]
    cols = CELL_ORIGINS[:, 1, None, None] + np.arange(CELL)[None, None, :]  # [cells, 1, 10]
    frames[:, rows, cols] = self.sprites[cells]
    return frames
