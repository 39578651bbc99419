"""Image preprocessing against transformers' Qwen2VLImageProcessorPil configured as Qwen3-VL."""

import numpy as np
import pytest
from PIL import Image
from transformers.image_utils import load_image as hf_load_image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from taskmem_jax.models.qwen3_vl.config import VisionConfig
from taskmem_jax.processing.image import MediaError, load_image, preprocess_image, smart_resize

VISION = VisionConfig()


def hf_processor(max_pixels=16777216):
  return Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3,
                                  image_std=[0.5] * 3, size={"shortest_edge": 65536, "longest_edge": max_pixels})


def random_image(height, width, channels=3):
  return np.random.default_rng(height * 7 + width).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.mark.parametrize("height,width,max_pixels,grid", [
    (300, 451, 16777216, (1, 18, 28)),  # arch notes §8: 288x448
    (1200, 50, 16777216, (1, 76, 4)),  # tall and thin: 1216x64
    (20, 30, 16777216, (1, 14, 20)),  # tiny, scaled up to min_pixels: 224x320
    (900, 1300, 200_000, (1, 22, 32)),  # scaled down to max_pixels: 352x512
])
def test_matches_transformers(height, width, max_pixels, grid):
  image = random_image(height, width)
  expected = hf_processor(max_pixels)(images=[Image.fromarray(image)], return_tensors="np")
  pixels, grid_thw = preprocess_image(image, VISION, max_pixels=max_pixels)
  assert grid_thw.dtype == np.int64 and tuple(grid_thw) == grid
  np.testing.assert_array_equal(grid_thw, expected["image_grid_thw"][0])
  assert pixels.dtype == np.float32 and pixels.shape == (np.prod(grid), VISION.patch_dim)
  np.testing.assert_allclose(pixels, expected["pixel_values"], atol=1e-6, rtol=0)


def test_rgba_pil_image_is_composited_onto_white_like_transformers():
  rgba = Image.fromarray(random_image(70, 90, channels=4), "RGBA")
  expected = hf_processor()(images=[rgba], return_tensors="np")
  pixels, _ = preprocess_image(rgba, VISION)
  np.testing.assert_allclose(pixels, expected["pixel_values"], atol=1e-6, rtol=0)


def test_path_loads_like_transformers_load_image(tmp_path):
  for mode, channels in [("RGB", 3), ("RGBA", 4)]:
    path = tmp_path / f"x_{mode}.png"
    Image.fromarray(random_image(33, 47, channels), mode).save(path)
    np.testing.assert_array_equal(load_image(path), np.array(hf_load_image(str(path))))
    np.testing.assert_array_equal(load_image(str(path)), np.array(hf_load_image(str(path))))


@pytest.mark.parametrize("height,width,max_pixels,expected", [
    (300, 451, 16777216, (288, 448)),  # 9.375 -> 9, 14.09 -> 14
    (80, 1008, 16777216, (64, 1024)),  # 2.5 -> 2 and 31.5 -> 32 (half-to-even); 64*1024 = min_pixels, kept
    (1200, 50, 16777216, (1216, 64)),  # 37.5 -> 38
    (20, 30, 16777216, (224, 320)),  # beta = sqrt(65536/600): ceil(6.53)=7, ceil(9.80)=10
    (900, 1300, 200_000, (352, 512)),  # beta = sqrt(5.85): floor(11.63)=11, floor(16.80)=16
    (10000, 60, 100_000, (4064, 32)),  # floor(0.77)=0 -> at least one factor
    (1, 200, 16777216, (32, 3648)),  # 200:1 is allowed; beta = sqrt(327.68): ceil(0.57)=1, ceil(113.1)=114
])
def test_smart_resize_by_hand(height, width, max_pixels, expected):
  assert smart_resize(height, width, 32, 65536, max_pixels) == expected


def test_errors_name_the_problem(tmp_path):
  with pytest.raises(MediaError, match="aspect ratio 201 exceeds 200"):
    smart_resize(201, 1)
  with pytest.raises(MediaError, match="aspect ratio 201"):
    preprocess_image(np.zeros((1, 201, 3), np.uint8), VISION)
  with pytest.raises(MediaError, match="0x10"):
    smart_resize(0, 10)
  missing = tmp_path / "missing.png"
  with pytest.raises(MediaError, match=f"not found: {missing}"):
    load_image(missing)
  not_image = tmp_path / "notes.png"
  not_image.write_text("not an image")
  with pytest.raises(MediaError, match=f"cannot read image {not_image}"):
    preprocess_image(not_image, VISION)
  with pytest.raises(MediaError, match=r"expected uint8 \[H, W, 3\]"):
    load_image(np.zeros((4, 4, 3), np.float32))
