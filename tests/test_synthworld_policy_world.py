"""The readable SynthWorld the shipped policy is trained on: patch-aligned events, one vision token per
region, per-token vision labels, and the world a policy folder records (synthworld.json).

References are independent of the code under test: event frames from the facts, token order from the
processor's own patch layout (patchify) applied to frames painted by hand, labels from Stream.scene.
"""

import collections
import json

import numpy as np
import pytest

from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld import render
from taskmem_jax.envs.synthworld.vision_labels import ATTRIBUTES, LABELS_PER_TOKEN, label_classes, token_labels
from taskmem_jax.processing.patchify import patchify

ALIGNED = sw.WorldConfig(num_clips=6, render="schematic", patch_aligned=True, max_facts=10)


def test_patch_aligned_events_fall_inside_temporal_patches():
  stream = sw.generate(4, ALIGNED)
  frames = [f.frame for f in stream.facts]
  assert frames and all(f % 2 == 1 for f in frames)  # the second frame of a 2-frame patch
  counts = collections.Counter(f.clip for f in stream.facts)
  assert all(ALIGNED.min_facts <= counts[c] <= ALIGNED.max_facts for c in range(ALIGNED.num_clips))
  # Every change between a patch's two frames is a fact; no change crosses from one patch to the next.
  for i in range(1, stream.num_frames):
    changed = not np.array_equal(stream.cells[i], stream.cells[i - 1])
    assert changed == (i in frames), f"frame {i}"
  # The default world is unchanged: events at any frame.
  assert any(f.frame % 2 == 0 for f in sw.generate(4, sw.WorldConfig(num_clips=6)).facts)


@pytest.mark.parametrize("changes, field", [
    (dict(patch_aligned=True), "max_facts"),  # default max_facts 12 > 10 odd frames
    (dict(patch_aligned=True, max_facts=2, min_facts=1, fps=0.5), "patch_aligned"),  # 5 frames per clip
])
def test_patch_aligned_config_errors(changes, field):
  with pytest.raises(ValueError, match=rf"WorldConfig\.{field}="):
    sw.WorldConfig(**changes)


@pytest.mark.parametrize("render_name", ["sprites", "schematic"])
def test_one_merged_token_per_region(render_name):
  """Paint each region of a frame in its own colour; after patchify, every merged token's patches hold
  one colour, and tokens come in REGIONS order."""
  cfg = sw.synthworld_model_config(render=render_name).vision
  size = render.SCHEMATIC_SIZE if render_name == "schematic" else render.FRAME_SIZE
  frame = np.zeros((2, size, size, 3), np.float32)
  half = size // 2
  for r in range(4):
    frame[:, (r // 2) * half:(r // 2 + 1) * half, (r % 2) * half:(r % 2 + 1) * half] = r + 1
  rows, grid = patchify(frame, cfg)
  m = cfg.spatial_merge_size
  assert grid.tolist() == [1, 2 * m, 2 * m]
  tokens = rows.reshape(4, m * m, -1)
  for r in range(4):
    assert np.all(tokens[r] == r + 1), f"token {r}"


def test_token_labels_match_the_scenes():
  stream = sw.generate(9, ALIGNED)
  frames = np.arange(20, 40)  # clip 1
  labels = token_labels(stream, frames)
  assert labels.shape == (10 * 4, LABELS_PER_TOKEN)
  classes = label_classes(stream)
  assert len(classes) == LABELS_PER_TOKEN and all((labels[:, k] < c).all() for k, c in enumerate(classes))
  colours, shapes = list(render.COLOURS), list(render.SHAPES)
  n = len(ATTRIBUTES)
  for g in range(10):
    for r, region in enumerate(render.REGIONS):
      row = labels[g * 4 + r]
      for which, frame in ((0, frames[2 * g]), (1, frames[2 * g + 1])):
        scene = stream.scene(int(frame))
        cells = [dict(zip(ATTRIBUTES, row[(which * 9 + c) * n:(which * 9 + c + 1) * n])) for c in range(9)]
        objects = sorted((colours[a["colour"] - 1], shapes[a["shape"] - 1]) for a in cells if a["kind"] == 1)
        people = sorted(a["person"] for a in cells if a["kind"] == 2)
        carried = {a["person"]: (colours[a["carried_colour"] - 1], shapes[a["carried_shape"] - 1])
                   for a in cells if a["kind"] == 2 and a["carried_colour"]}
        digits = [a["digit"] - 1 for a in cells if a["kind"] == 3]
        assert objects == sorted(o for o, where in scene.objects.items() if where == region)
        assert people == sorted(k for k, where in scene.people.items() if where == region)
        assert carried == {k: o for k, o in scene.carrying.items() if scene.people[k] == region}
        assert digits == ([scene.sign] if region == render.REGIONS[0] else [])
  # A change is flagged exactly where a fact happens.
  flagged = {int(frames[2 * (i // 4) + 1]) for i in np.nonzero(labels[:, -9:].any(1))[0]}
  assert flagged == {f.frame for f in stream.facts_in(1)}
  with pytest.raises(ValueError, match="whole 2-frame"):
    token_labels(stream, np.arange(20, 39))
  with pytest.raises(ValueError, match="frame index"):
    token_labels(stream, np.arange(stream.num_frames - 2, stream.num_frames + 2))


def test_policy_world_round_trip_and_errors(tmp_path):
  assert sw.policy_world(None) == {} and sw.policy_world(str(tmp_path)) == {}
  assert sw.policy_render(str(tmp_path)) == "sprites"
  (tmp_path / "synthworld.json").write_text(json.dumps({"render": "schematic", "patch_aligned": True, "max_facts": 10}))
  assert sw.policy_render(str(tmp_path)) == "schematic"
  config = sw.policy_world_config(str(tmp_path), num_clips=3)
  assert (config.render, config.patch_aligned, config.max_facts, config.num_clips) == ("schematic", True, 10, 3)
  (tmp_path / "synthworld.json").write_text(json.dumps({"render": "schematic", "colour": "red"}))
  with pytest.raises(ValueError, match="unknown field 'colour'"):
    sw.policy_world(str(tmp_path))
  (tmp_path / "synthworld.json").write_text(json.dumps({"patch_aligned": True}))
  with pytest.raises(ValueError, match=r"synthworld\.json: WorldConfig\.max_facts"):
    sw.policy_world(str(tmp_path))
  (tmp_path / "synthworld.json").write_text("{")
  with pytest.raises(ValueError, match="not valid JSON"):
    sw.policy_world(str(tmp_path))


def test_model_config_merge_per_render():
  assert sw.synthworld_model_config(render="schematic").vision.spatial_merge_size == 3
  assert sw.synthworld_model_config(render="sprites").vision.spatial_merge_size == 2
  with pytest.raises(ValueError, match="render='fancy'"):
    sw.synthworld_model_config(render="fancy")
