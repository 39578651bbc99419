"""Positions for fixed-size prompt buffers with masked slots, computed inside jit, against
get_rope_index on the compact prompt; and the model on a masked buffer against the compact prompt."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from taskmem_jax.models.qwen3_vl import get_rope_index, init_random, prepare_inputs, preset
from taskmem_jax.models.qwen3_vl.layout import concat, layout_positions, text_slots, vision_group_slots

CONFIG = preset("tiny")
IMG, VID, VS, VE = CONFIG.image_token_id, CONFIG.video_token_id, CONFIG.vision_start_token_id, CONFIG.vision_end_token_id


def window_buffer():
  """A window-like buffer: prefix, an image, two timestamped video frame groups, two memory slots of
  8 tokens, suffix. Returns (layout, ids [L], slot kinds [L]: 'fixed', 'memory', 'group0', 'group1')."""
  parts, ids, kinds = [], [], []

  def text(tokens, kind="fixed"):
    parts.append(text_slots(len(tokens)))
    ids.extend(tokens)
    kinds.extend([kind] * len(tokens))

  def vision(token, h, w, kind="fixed"):
    layout = vision_group_slots(h, w, 2)
    parts.append(layout)
    ids.extend([token] * layout.length)
    kinds.extend([kind] * layout.length)

  text([1, 2, 3, VS])
  vision(IMG, 4, 6)
  text([VE, 4, VS])
  for g in range(2):
    text([5 + g, 7, VS], f"group{g}")
    vision(VID, 4, 4, f"group{g}")
    text([VE], f"group{g}")
  text([VE, 9])
  for m in range(2):
    text(list(range(20 + 8 * m, 28 + 8 * m)), "memory")
  text([10, 11, 12])
  return concat(parts), np.array(ids), np.array(kinds)


def random_mask(kinds, rng):
  mask = np.ones(len(kinds), np.int32)
  memory = np.flatnonzero(kinds == "memory")
  mask[memory[rng.random(len(memory)) < 0.5]] = 0
  if rng.random() < 0.5:
    mask[kinds == "group1"] = 0  # a frame group slot not in use yet
  return mask


def compact(ids, mask, video_groups):
  grids = [[1, 4, 4]] * video_groups
  return ids[mask > 0][None], grids


@pytest.mark.parametrize("seed", range(4))
def test_positions_match_get_rope_index_on_the_compact_prompt(seed):
  layout, ids, kinds = window_buffer()
  rng = np.random.default_rng(seed)
  masks = np.stack([random_mask(kinds, rng) for _ in range(3)])
  positions, deltas = jax.jit(lambda m: layout_positions(layout, m))(jnp.asarray(masks))  # layout: a constant
  for b, mask in enumerate(masks):
    groups = 1 + int(mask[kinds == "group1"].all())
    compact_ids, grids = compact(ids, mask, groups)
    expected, expected_delta = get_rope_index(compact_ids, CONFIG, None, [[1, 4, 6]], [[groups, 4, 4]])
    np.testing.assert_array_equal(np.asarray(positions)[:, b, mask > 0], expected[:, 0])
    assert (np.asarray(positions)[:, b, mask == 0] == 0).all()
    assert int(deltas[b, 0]) == int(expected_delta[0, 0])


@pytest.mark.slow
def test_model_on_masked_buffer_equals_compact_prompt():
  model = init_random(CONFIG, seed=0)
  layout, ids, kinds = window_buffer()
  mask = random_mask(kinds, np.random.default_rng(7))
  mask[kinds == "group1"] = 1
  rng = np.random.default_rng(0)
  image = rng.standard_normal((24, 1536)).astype(np.float32)
  video = rng.standard_normal((32, 1536)).astype(np.float32)
  vision = dict(pixel_values=image, image_grid_thw=[[1, 4, 6]], pixel_values_videos=video, video_grid_thw=[[2, 4, 4]])
  expected = np.asarray(model(ids[mask > 0][None], **vision))[0]
  buffer = prepare_inputs(CONFIG, ids[None], mask[None], **vision)
  positions, deltas = layout_positions(layout, jnp.asarray(mask[None]))
  logits = np.asarray(model.forward(buffer._replace(position_ids=positions, rope_deltas=deltas)))[0]
  np.testing.assert_allclose(logits[mask > 0], expected, rtol=1e-5, atol=1e-5)
