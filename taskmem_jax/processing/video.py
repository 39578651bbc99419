"""Videos -> Qwen3-VL pixel_values and per-group timestamps, following transformers 5.23.

- read_video: decord, like transformers' read_video_decord, but only for the frames of a [start, end)
  window, sampled as if the window were its own video (Qwen3VLVideoProcessor.sample_frames).
- preprocess_video: video smart_resize (Qwen3-VL variant), bicubic resize, normalise, patchify.
- VideoClip.timestamps: Qwen3VLProcessor._calculate_timestamps, one time per temporal group.

Defaults are the Hub video_preprocessor_config.json of Qwen3-VL: fps 2, min_frames 4, max_frames 768,
size {shortest_edge: 4096, longest_edge: 25165824}, used as min_pixels / max_pixels for the whole
clip (t_bar * h * w), not per frame.

One known difference: transformers resizes video frames with torchvision, which is not installed
here; for uint8 on CPU it calls torch's antialiased bicubic kernel. This module resizes each frame with
PIL bicubic instead (see resize_frame). The grid is exact; pixels are within 2 levels of torch's kernel.
"""

from __future__ import annotations

import dataclasses
import math
import os

import decord
import numpy as np
import PIL.Image

from taskmem_jax.models.qwen3_vl.config import VisionConfig
from taskmem_jax.processing.image import MAX_ASPECT_RATIO, MediaError
from taskmem_jax.processing.patchify import normalize, patchify

FPS = 2.0
MIN_FRAMES = 4
MAX_FRAMES = 768
MIN_PIXELS = 4096
MAX_PIXELS = 25165824
MAX_VIDEO_TOKENS = 768  # per-frame token ceiling of cap_pixels_per_frame
UNKNOWN_FPS = 24.0  # what transformers assumes when a video has no fps


def group_timestamps(indices, video_fps: float, temporal_patch_size: int = 2) -> list[float]:
  """Frame indices [T] -> seconds per temporal group [ceil(T / temporal_patch_size)].

  transformers' _calculate_timestamps: pad by repeating the last index, idx / fps, then the mean of
  the first and last frame of each group.
  """
  indices = [int(i) for i in indices]
  if len(indices) % temporal_patch_size:
    indices += [indices[-1]] * (temporal_patch_size - len(indices) % temporal_patch_size)
  seconds = [i / video_fps for i in indices]
  return [(seconds[i] + seconds[i + temporal_patch_size - 1]) / 2 for i in range(0, len(seconds), temporal_patch_size)]


@dataclasses.dataclass
class VideoClip:
  """Sampled frames of a [start, end) window of a video.

  frames: uint8 [T, H, W, 3] RGB.
  frame_indices: int64 [T], indices into the source video.
  source_fps: the source's average fps.
  start, end: the window in seconds of the source (end clamped to the duration).
  first_frame: source index of the window's first frame, i.e. frame 0 of the window as its own video.
  """
  frames: np.ndarray
  frame_indices: np.ndarray
  source_fps: float
  start: float
  end: float
  first_frame: int = 0

  def timestamps(self, temporal_patch_size: int = 2, *, absolute: bool = False) -> list[float]:
    """Seconds per temporal group, as transformers computes them for the prompt's `<t seconds>`.

    By default relative to the window: what transformers would give for the window cut out as its
    own video file (its frame k is source frame first_frame + k). absolute=True measures from the
    start of the source video instead, which is what transformers gives for the uncut file.
    """
    origin = 0 if absolute else self.first_frame
    return group_timestamps(np.asarray(self.frame_indices) - origin, self.source_fps, temporal_patch_size)


def sample_frame_indices(total_frames: int, video_fps: float | None, *, fps: float = FPS, min_frames: int = MIN_FRAMES,
                         max_frames: int = MAX_FRAMES) -> np.ndarray:
  """int64 [n]: Qwen3VLVideoProcessor.sample_frames with fps sampling.

  n = int(total / video_fps * fps), clamped to [min_frames, max_frames] and then to total_frames (so
  short videos give every frame); indices are linspace(0, total - 1, n) rounded half-to-even.
  """
  if total_frames < 1:
    raise MediaError(f"cannot sample frames from a video with {total_frames} frames")
  video_fps = UNKNOWN_FPS if video_fps is None else video_fps
  n = int(total_frames / video_fps * fps)
  n = min(max(n, min_frames), max_frames, total_frames)
  return np.linspace(0, total_frames - 1, n).round().astype(np.int64)


def _window(path: str, total: int, fps: float, start: float | None, end: float | None) -> tuple[int, int, float, float]:
  """Source frames [first, stop) whose time idx / fps lies in [start, end), plus the window in seconds.

  Frame times are idx / fps, the convention of transformers' timestamps, rather than container pts;
  they agree for constant-frame-rate videos that start at 0. The duration is total / fps, as in
  transformers' read_video_decord. An end past the duration is clamped to it.
  """
  duration = total / fps
  start = 0.0 if start is None else float(start)
  end = duration if end is None else float(end)
  if not (0 <= start < duration and end > start):  # `not` so that NaN fails too
    raise MediaError(f"{path}: window start={start} end={end} is not inside the video (duration {duration:.3f} s)")
  end = min(end, duration)
  times = np.arange(total) / fps
  first, stop = (int(i) for i in np.searchsorted(times, [start, end], side="left"))
  if stop <= first:
    raise MediaError(f"{path}: window start={start} end={end} holds no frame (fps {fps:g}, duration {duration:.3f} s)")
  return first, stop, start, end


def _open(path: str, num_threads: int):
  """(decord reader, frame count, average fps) of the video at path, or a MediaError naming the problem."""
  if not os.path.isfile(path):
    raise MediaError(f"video file not found: {path}")
  try:
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
  except (RuntimeError, decord.DECORDError) as e:
    # decord appends a C++ backtrace; its first line says what went wrong.
    raise MediaError(f"cannot open video {path}: {str(e).strip().splitlines()[0]}") from e
  total, source_fps = len(reader), float(reader.get_avg_fps())
  if total == 0:
    raise MediaError(f"video {path} has no frames")
  if not (math.isfinite(source_fps) and source_fps > 0):
    raise MediaError(f"video {path} reports fps {source_fps}")
  return reader, total, source_fps


def video_duration(path: str | os.PathLike) -> float:
  """Seconds of the video at path: frames / average fps, read_video's convention."""
  _, total, fps = _open(os.fspath(path), 1)
  return total / fps


def read_video(path: str | os.PathLike, *, start: float | None = None, end: float | None = None, fps: float = FPS,
               min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES) -> VideoClip:
  """Decode the sampled frames of the [start, end) window (seconds; None = the whole video).

  The window's frames are those with idx / source_fps in [start, end). They are sampled as if they
  were a video of their own, and only the sampled frames are decoded (decord get_batch).
  """
  path = os.fspath(path)
  reader, total, source_fps = _open(path, 2)
  first, stop, start, end = _window(path, total, source_fps, start, end)
  indices = first + sample_frame_indices(stop - first, source_fps, fps=fps, min_frames=min_frames,
                                         max_frames=max_frames)
  try:
    frames = reader.get_batch(indices.tolist()).asnumpy()
  except (RuntimeError, decord.DECORDError) as e:
    raise MediaError(f"cannot decode frames of video {path}: {str(e).strip().splitlines()[0]}") from e
  return VideoClip(frames, indices, source_fps, start, end, first)


def video_smart_resize(num_frames: int, height: int, width: int, *, temporal_factor: int = 2, factor: int = 32,
                       min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
  """Target (height, width) per frame, Qwen3-VL's video smart_resize.

  Differs from the image one: sides below factor are first scaled up (int truncation); the budget
  check uses t_bar = num_frames rounded half-to-even to a multiple of temporal_factor, while the
  scale beta uses the raw num_frames.
  """
  if num_frames < temporal_factor:
    raise MediaError(f"video of {num_frames} frames: need at least temporal_patch_size={temporal_factor}")
  if height < 1 or width < 1:
    raise MediaError(f"video frame size {height}x{width}: both sides must be at least 1 pixel")
  if height < factor or width < factor:
    scale = max(factor / height, factor / width)
    height, width = int(height * scale), int(width * scale)
  ratio = max(height, width) / min(height, width)
  if ratio > MAX_ASPECT_RATIO:
    raise MediaError(f"video frame size {height}x{width}: aspect ratio {ratio:g} exceeds {MAX_ASPECT_RATIO}")
  h_bar = round(height / factor) * factor
  w_bar = round(width / factor) * factor
  t_bar = round(num_frames / temporal_factor) * temporal_factor
  if t_bar * h_bar * w_bar > max_pixels:
    beta = math.sqrt(num_frames * height * width / max_pixels)
    h_bar = max(factor, math.floor(height / beta / factor) * factor)
    w_bar = max(factor, math.floor(width / beta / factor) * factor)
  elif t_bar * h_bar * w_bar < min_pixels:
    beta = math.sqrt(min_pixels / (num_frames * height * width))
    h_bar = math.ceil(height * beta / factor) * factor
    w_bar = math.ceil(width * beta / factor) * factor
  return h_bar, w_bar


def resize_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [height, width, 3], PIL bicubic in torch's pass order.

  torch's uint8 antialiased bicubic resizes horizontally, then vertically. One PIL resize call may
  pick the other order, which on detailed content moves pixels by up to ~25 levels; two single-axis
  PIL calls in torch's order stay within 2 levels of it (about 1% of pixels differ at all).
  """
  image = PIL.Image.fromarray(frame)
  if width != image.width:
    image = image.resize((width, image.height), PIL.Image.Resampling.BICUBIC)
  if height != image.height:
    image = image.resize((width, height), PIL.Image.Resampling.BICUBIC)
  return np.asarray(image)


def preprocess_video(clip: VideoClip, vision: VisionConfig, *, min_pixels: int = MIN_PIXELS,
                     max_pixels: int = MAX_PIXELS, cap_pixels_per_frame: bool = False,
                     absolute_timestamps: bool = False) -> tuple[np.ndarray, np.ndarray, list[float]]:
  """clip -> (pixel_values [t*h*w, C*T*P*P] float32, grid_thw int64 [3], timestamps [t] in seconds).

  cap_pixels_per_frame: transformers' opt-in cap (off by default in 5.23): per-frame pixels at most
  min(768 tokens * factor^2, max_pixels // T), at least 1.05 * min_pixels.
  """
  frames = np.asarray(clip.frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
    raise MediaError(f"video frames: expected uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}")
  num_frames, height, width = frames.shape[:3]
  factor = vision.patch_size * vision.spatial_merge_size
  if cap_pixels_per_frame:
    per_frame = max(min(MAX_VIDEO_TOKENS * factor**2, max_pixels // num_frames), int(min_pixels * 1.05))
    max_pixels = per_frame * num_frames
  height, width = video_smart_resize(num_frames, height, width, temporal_factor=vision.temporal_patch_size,
                                     factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
  resized = np.stack([resize_frame(frame, height, width) for frame in frames])
  pixel_values, grid_thw = patchify(normalize(resized), vision)
  return pixel_values, grid_thw, clip.timestamps(vision.temporal_patch_size, absolute=absolute_timestamps)
