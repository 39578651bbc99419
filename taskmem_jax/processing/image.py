"""Images -> Qwen3-VL pixel_values, equal to transformers' Qwen2VLImageProcessorPil with Qwen3-VL settings.

The pipeline: load as uint8 RGB, smart_resize to multiples of patch*merge (32) within a pixel budget,
PIL bicubic resize of the uint8 image, normalise with mean = std = 0.5, patchify. Defaults are the Hub
preprocessor_config.json of Qwen3-VL: size {shortest_edge: 65536, longest_edge: 16777216}, which the
processor uses as min_pixels / max_pixels.
"""

from __future__ import annotations

import math
import os

import numpy as np
import PIL.Image
import PIL.ImageOps

from taskmem_jax.models.qwen3_vl.config import VisionConfig
from taskmem_jax.processing.patchify import normalize, patchify

MIN_PIXELS = 65536
MAX_PIXELS = 16777216
MAX_ASPECT_RATIO = 200


class MediaError(ValueError):
  """An image or video that cannot be read or processed; the message names the file or the values."""


def smart_resize(height: int, width: int, factor: int = 32, min_pixels: int = MIN_PIXELS,
                 max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
  """Target (height, width): multiples of factor, area within [min_pixels, max_pixels], aspect kept.

  transformers' formula, including Python's round (half-to-even) for the nearest multiple. It has no
  lower size limit: tiny images are scaled up to min_pixels. Only empty sizes are rejected here, where
  transformers would divide by zero.
  """
  if height < 1 or width < 1:
    raise MediaError(f"image size {height}x{width}: both sides must be at least 1 pixel")
  ratio = max(height, width) / min(height, width)
  if ratio > MAX_ASPECT_RATIO:
    raise MediaError(f"image size {height}x{width}: aspect ratio {ratio:g} exceeds {MAX_ASPECT_RATIO}")
  h_bar = round(height / factor) * factor
  w_bar = round(width / factor) * factor
  if h_bar * w_bar > max_pixels:
    beta = math.sqrt(height * width / max_pixels)
    h_bar = max(factor, math.floor(height / beta / factor) * factor)
    w_bar = max(factor, math.floor(width / beta / factor) * factor)
  elif h_bar * w_bar < min_pixels:
    beta = math.sqrt(min_pixels / (height * width))
    h_bar = math.ceil(height * beta / factor) * factor
    w_bar = math.ceil(width * beta / factor) * factor
  return h_bar, w_bar


def _pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
  """transformers' convert_to_rgb for a PIL image: transparency is composited onto white."""
  if "A" in image.getbands() or image.info.get("transparency") is not None:
    image = image.convert("RGBA")
    background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
    image = PIL.Image.alpha_composite(background, image)
  return np.array(image.convert("RGB"))


def load_image(source: str | os.PathLike | PIL.Image.Image | np.ndarray) -> np.ndarray:
  """A path, PIL image or uint8 array [H, W, 3] -> uint8 RGB [H, W, 3].

  The two non-array inputs follow the two transformers paths they correspond to. A path goes through
  transformers.image_utils.load_image: EXIF orientation applied, then convert("RGB"), which drops
  alpha. A PIL image given directly goes through the processor's convert_to_rgb: no EXIF rotation, and
  alpha composited onto white.
  """
  if isinstance(source, np.ndarray):
    if source.dtype != np.uint8 or source.ndim != 3 or source.shape[-1] != 3:
      raise MediaError(f"image array: expected uint8 [H, W, 3], got {source.dtype} {source.shape}")
    return source
  if isinstance(source, PIL.Image.Image):
    return _pil_to_rgb(source)
  if not isinstance(source, (str, os.PathLike)):
    raise TypeError(f"image: expected a path, PIL.Image or uint8 array, got {type(source).__name__}")
  path = os.fspath(source)
  if not os.path.isfile(path):
    raise MediaError(f"image file not found: {path}")
  try:
    with PIL.Image.open(path) as image:
      return np.array(PIL.ImageOps.exif_transpose(image).convert("RGB"))
  # UnidentifiedImageError and truncated files are OSErrors; some decoders raise the other two.
  except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as e:
    raise MediaError(f"cannot read image {path}: {e}") from e


def resize_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [height, width, 3], PIL bicubic on the uint8 image.

  This is what transformers' PIL backend does (image_transforms.resize: PIL.Image.fromarray, then
  resize with reducing_gap=None, then back to an array; no float round trip for uint8 input).
  """
  resized = PIL.Image.fromarray(image).resize((width, height), PIL.Image.Resampling.BICUBIC)
  return np.asarray(resized)


def preprocess_image(image: str | os.PathLike | PIL.Image.Image | np.ndarray, vision: VisionConfig, *,
                     min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
  """One image -> (pixel_values [h*w, C*T*P*P] float32, grid_thw int64 [3] = (1, h, w) in patches).

  image: anything load_image takes. The single frame is repeated over the temporal patch by patchify.
  """
  rgb = load_image(image)
  factor = vision.patch_size * vision.spatial_merge_size
  height, width = smart_resize(rgb.shape[0], rgb.shape[1], factor, min_pixels, max_pixels)
  return patchify(normalize(resize_bicubic(rgb, height, width)[None]), vision)
