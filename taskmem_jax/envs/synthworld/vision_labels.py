"""Per-token labels of SynthWorld frames: what the vision stage (training/vision_stage.py) teaches the tower.

Both renders put one merged vision token on one region per temporal patch: the sprite room is 64x64
with 32-px regions (patch 16, spatial merge 2), the schematic room 96x96 with 48-px regions (patch 16,
spatial merge 3; synthworld_model_config(render=...)). A temporal patch holds two consecutive frames.
For every token (temporal patch g, region r) the labels are, per cell of the region (CELLS_PER_REGION)
and per frame of the patch, the cell's content as separate attributes (ATTRIBUTES: what stands there,
its colour and shape, the person's id and the colour and shape of what they carry, the sign's digit;
0 = not applicable), then per cell whether its content changed between the two frames.

Why attributes rather than sprite codes: the language model has to say "person 2 picks up the red
circle", so features in which each attribute is its own linear direction are the ones it can read.
Why labels at all: a tiny tower trained from scratch through the language model's loss alone learns
to ignore the video (experiments/make_sft_data.py, measured).
"""

from __future__ import annotations

import numpy as np

from taskmem_jax.envs.synthworld.render import CELLS_PER_REGION, COLOURS, NUM_CELLS, REGIONS, SHAPES, Codebook
from taskmem_jax.envs.synthworld.world import World

NUM_REGIONS = len(REGIONS)
KIND_IDS = {"empty": 0, "object": 1, "person": 2, "sign": 3}
COLOUR_IDS = {c: i + 1 for i, c in enumerate(COLOURS)}
SHAPE_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}
# attribute -> number of classes (0 = not applicable); person ids are 1..9, digits 0..9 stored as 1..10.
ATTRIBUTES = {"kind": len(KIND_IDS), "colour": len(COLOURS) + 1, "shape": len(SHAPES) + 1, "person": 10,
              "carried_colour": len(COLOURS) + 1, "carried_shape": len(SHAPES) + 1, "digit": 11}
LABELS_PER_TOKEN = (2 * len(ATTRIBUTES) + 1) * CELLS_PER_REGION


def code_attributes(codebook: Codebook) -> np.ndarray:
  """int32 [num_codes, len(ATTRIBUTES)]: the attributes of every sprite code."""
  table = np.zeros((codebook.num_codes, len(ATTRIBUTES)), np.int32)
  for code in range(codebook.num_codes):
    entity = codebook.entity(code)
    row = dict.fromkeys(ATTRIBUTES, 0)
    row["kind"] = KIND_IDS[entity[0]]
    if entity[0] == "object":
      row["colour"], row["shape"] = COLOUR_IDS[entity[1]], SHAPE_IDS[entity[2]]
    elif entity[0] == "person":
      row["person"] = entity[1]
      if entity[2] is not None:
        row["carried_colour"], row["carried_shape"] = COLOUR_IDS[entity[2][0]], SHAPE_IDS[entity[2][1]]
    elif entity[0] == "sign":
      row["digit"] = entity[1] + 1
    table[code] = [row[name] for name in ATTRIBUTES]
  return table


def label_classes(stream: World | None = None) -> tuple[int, ...]:
  """Number of classes of each label column (token_labels' column order)."""
  del stream  # the attributes are the same for every world
  per_frame = tuple(ATTRIBUTES.values()) * CELLS_PER_REGION
  return per_frame * 2 + (2,) * CELLS_PER_REGION


def token_labels(stream: World, frames) -> np.ndarray:
  """Frame indices [T] (T even, in the order the processor stacks them) -> int32 [T/2 * NUM_REGIONS,
  LABELS_PER_TOKEN]: rows in the vision tower's merged-token order (temporal patch, then regions
  north-west, north-east, south-west, south-east, which is row-major over the 2x2 token grid); columns:
  the first frame's attributes cell by cell, the second frame's, then the changed flags."""
  frames = np.asarray(frames, np.int64).reshape(-1)
  if len(frames) % 2:
    raise ValueError(f"frames: {len(frames)} indices; token labels need whole 2-frame temporal patches")
  bad = frames[(frames < 0) | (frames >= stream.num_frames)]
  if bad.size:
    raise ValueError(f"frame index {int(bad[0])}: the stream has frames 0..{stream.num_frames - 1}")
  codes = stream.cells[frames].reshape(-1, 2, NUM_REGIONS, CELLS_PER_REGION)  # [patch, frame, region, cell]
  codes = codes.transpose(0, 2, 1, 3)  # [patch, region, frame, cell]
  attributes = code_attributes(stream.codebook)[codes]  # [patch, region, frame, cell, attribute]
  changed = codes[:, :, 0] != codes[:, :, 1]
  labels = np.concatenate([attributes.reshape(*codes.shape[:2], -1), changed], axis=-1)
  return labels.reshape(-1, LABELS_PER_TOKEN).astype(np.int32)


assert NUM_CELLS == NUM_REGIONS * CELLS_PER_REGION
