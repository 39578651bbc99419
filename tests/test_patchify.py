"""patchify against transformers' PIL image processor (sizes that need no resize, so resizing, which
belongs to the processor, is out of the comparison)."""

import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from taskmem_jax.models.qwen3_vl import VisionConfig
from taskmem_jax.processing import normalize, patchify


@pytest.mark.parametrize("height,width", [(64, 96), (96, 32)])
def test_image_patches_match_transformers(height, width):
  image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
  processor = Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3,
                                       image_std=[0.5] * 3, min_pixels=32 * 32, max_pixels=10**7)
  expected = processor(images=[Image.fromarray(image)], return_tensors="np")
  pixels, grid = patchify(normalize(image[None]), VisionConfig())
  np.testing.assert_array_equal(grid, expected["image_grid_thw"][0])
  np.testing.assert_allclose(pixels, expected["pixel_values"], atol=1e-6)


def test_video_frames_pad_to_temporal_patch_and_keep_order():
  frames = normalize(np.random.default_rng(0).integers(0, 256, (3, 32, 64, 3), dtype=np.uint8))
  pixels, grid = patchify(frames, VisionConfig())
  assert grid.tolist() == [2, 2, 4]
  # Row layout (C, T, P, P): the second temporal group holds frame 2 twice (the last frame repeated).
  rows = pixels.reshape(2, 2 * 4, 3, 2, 16, 16)
  np.testing.assert_array_equal(rows[1, :, :, 0], rows[1, :, :, 1])
  # Patch 1 of a frame is block (0,0), in_col 1: rows 0-15, cols 16-31 of channel 0 of frame 0.
  np.testing.assert_array_equal(rows[0, 1, 0, 0], frames[0, :16, 16:32, 0])
  # Patch 4 is block (0,1), in (0,0): cols 32-47.
  np.testing.assert_array_equal(rows[0, 4, 0, 0], frames[0, :16, 32:48, 0])


def test_bad_sizes_are_named():
  with pytest.raises(ValueError, match="height 40 and width 64"):
    patchify(np.zeros((1, 40, 64, 3), np.float32), VisionConfig())
  with pytest.raises(ValueError, match=r"expected shape \[T, H, W, 3\]"):
    patchify(np.zeros((32, 32, 3), np.float32), VisionConfig())
