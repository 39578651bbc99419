"""Video reading and preprocessing against PyAV decodes and transformers 5.23's Qwen3-VL video code.

transformers' video resize needs torchvision, which is not installed, so the full video processor cannot
run here. What runs is checked directly: sample_frames, the video smart_resize, patchify,
_calculate_timestamps and get_num_of_video_patches; the resize kernel is checked against torch's.
"""

import re

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.image_transforms import rescale
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as hf_video_smart_resize
from transformers.video_utils import VideoMetadata

from taskmem_jax.models.qwen3_vl.config import VisionConfig
from taskmem_jax.processing.image import MediaError
from taskmem_jax.processing.video import (VideoClip, preprocess_video, read_video, resize_frame, sample_frame_indices,
                                          video_smart_resize)

VISION = VisionConfig()
FPS, NUM_FRAMES, HEIGHT, WIDTH = 24, 72, 64, 96  # a 3 s clip


def source_frame(i: int) -> np.ndarray:
  """uint8 [H, W, 3]: smooth ramps that move with i, and blue = 3i so that every frame is distinct."""
  yy, xx = np.mgrid[:HEIGHT, :WIDTH]
  return np.stack([(xx * 2 + i * 3) % 256, (yy * 3 + i * 7) % 256, np.full_like(xx, i * 3)], -1).astype(np.uint8)


SOURCE = np.stack([source_frame(i) for i in range(NUM_FRAMES)])


def write_mp4(path, codec, pix_fmt, options, frames=SOURCE):
  with av.open(str(path), "w") as container:
    stream = container.add_stream(codec, rate=FPS)
    stream.width, stream.height, stream.pix_fmt, stream.options = WIDTH, HEIGHT, pix_fmt, options
    container.start_encoding()  # so that an mp4 with no frames still gets a header
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def pyav_decode(path) -> np.ndarray:
  with av.open(str(path)) as container:
    return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """lossless: H.264 in RGB at qp 0, decodes to SOURCE exactly. yuv420p: the common lossy format."""
  folder = tmp_path_factory.mktemp("videos")
  paths = {"lossless": folder / "lossless.mp4", "yuv420p": folder / "yuv420p.mp4"}
  write_mp4(paths["lossless"], "libx264rgb", "rgb24", {"qp": "0"})
  write_mp4(paths["yuv420p"], "libx264", "yuv420p", {"crf": "10"})
  return paths


@pytest.fixture(scope="module")
def hf_video_processor():
  return Qwen3VLVideoProcessor()  # class defaults: fps 2, min_frames 4, max_frames 768


# --- reading ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lossless", "yuv420p"])
def test_decord_frames_equal_pyav(videos, name):
  # Both decoders use FFmpeg's H.264 decoder and swscale's YUV->RGB, so the uint8 frames are identical.
  full = pyav_decode(videos[name])
  assert full.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
  if name == "lossless":
    np.testing.assert_array_equal(full, SOURCE)
  for start, end in [(None, None), (1, 2), (0.5, 2.9)]:
    clip = read_video(videos[name], start=start, end=end)
    np.testing.assert_array_equal(clip.frames, full[clip.frame_indices])


def test_whole_video(videos):
  clip = read_video(videos["lossless"])
  # int(72 / 24 * 2) = 6 frames; linspace(0, 71, 6) = 0, 14.2, 28.4, 42.6, 56.8, 71
  assert clip.frame_indices.dtype == np.int64 and clip.frame_indices.tolist() == [0, 14, 28, 43, 57, 71]
  assert (clip.source_fps, clip.start, clip.end, clip.first_frame) == (24.0, 0.0, 3.0, 0)
  np.testing.assert_array_equal(clip.frames, SOURCE[clip.frame_indices])


def test_window_is_sampled_as_its_own_video(videos):
  clip = read_video(videos["lossless"], start=1, end=2)
  # Frames with idx/24 in [1, 2): 24..47. As a 24-frame video: 2 frames -> min_frames 4 -> linspace(0, 23, 4).
  assert clip.frame_indices.tolist() == [24 + i for i in (0, 8, 15, 23)]
  assert (clip.start, clip.end, clip.first_frame) == (1.0, 2.0, 24)
  np.testing.assert_array_equal(clip.frames, pyav_decode(videos["lossless"])[clip.frame_indices])
  # transformers' arithmetic exactly: (a / fps + b / fps) / 2 per pair of frames.
  assert clip.timestamps() == [(0 / 24 + 8 / 24) / 2, (15 / 24 + 23 / 24) / 2]
  assert clip.timestamps(absolute=True) == [(24 / 24 + 32 / 24) / 2, (39 / 24 + 47 / 24) / 2]


def test_window_bounds(videos):
  # 1.01 s falls between frames 24 (1.0 s) and 25; an end past the 3 s duration is clamped.
  clip = read_video(videos["lossless"], start=1.01, end=10)
  # 47 frames (25..71): int(47 / 24 * 2) = 3 -> 4; linspace(0, 46, 4) = 0, 15.3, 30.7, 46
  assert clip.frame_indices.tolist() == [25 + i for i in (0, 15, 31, 46)]
  assert (clip.end, clip.first_frame) == (3.0, 25)
  # end is exclusive: [0, 1) holds frames 0..23.
  assert read_video(videos["lossless"], end=1, min_frames=24).frame_indices.tolist() == list(range(24))


# --- sampling ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("total,video_fps,kwargs,expected", [
    (72, 24.0, {}, [0, 14, 28, 43, 57, 71]),
    (10, 24.0, {}, [0, 3, 6, 9]),  # int(0.83) = 0 -> min_frames 4
    (3, 24.0, {}, [0, 1, 2]),  # min_frames 4, then capped at the 3 frames there are
    (6, 24.0, {"min_frames": 5}, [0, 1, 2, 4, 5]),  # step 1.25: 2.5 -> 2 (half-to-even)
    (11, 24.0, {"min_frames": 5}, [0, 2, 5, 8, 10]),  # step 2.5: 2.5 -> 2, 7.5 -> 8
    (100, 24.0, {"max_frames": 5}, [0, 25, 50, 74, 99]),  # int(8.3) = 8 -> max_frames 5; 24.75, 49.5 -> 50
    (48, None, {}, [0, 16, 31, 47]),  # unknown fps: 24 assumed, like transformers
    (30, 30.0, {"fps": 4.0}, [0, 10, 19, 29]),
])
def test_sample_frame_indices_by_hand(total, video_fps, kwargs, expected):
  indices = sample_frame_indices(total, video_fps, **kwargs)
  assert indices.dtype == np.int64 and indices.tolist() == expected


def test_sample_frame_indices_max_frames():
  indices = sample_frame_indices(100_000, 24.0)  # int(8333.3) -> 768
  assert len(indices) == 768 and indices[0] == 0 and indices[-1] == 99_999


@pytest.mark.parametrize("total,video_fps", [(72, 24.0), (10, 24.0), (3, 24.0), (1, 30.0), (100_000, 24.0),
                                             (901, 29.97), (250, 25.0), (1001, 30000 / 1001), (37, 12.5)])
def test_sample_frame_indices_match_transformers(hf_video_processor, total, video_fps):
  expected = hf_video_processor.sample_frames(VideoMetadata(total_num_frames=total, fps=video_fps))
  np.testing.assert_array_equal(sample_frame_indices(total, video_fps), expected)


# --- resizing ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs,expected", [
    ((6, 64, 96), {}, (64, 96)),  # 6*64*96 within [4096, 25165824]
    ((4, 20, 300), {}, (32, 480)),  # height < 32: scaled by 1.6 first
    ((5, 64, 64), {"max_pixels": 16384}, (64, 64)),  # t_bar = round(2.5)*2 = 4: 4*64*64 is not > max
    ((7, 64, 64), {"max_pixels": 28672}, (64, 64)),  # t_bar = 8 exceeds, but beta uses 7 frames: beta = 1
    ((4, 32, 32), {"min_pixels": 131072}, (192, 192)),  # beta = sqrt(32): ceil(5.66) = 6
    ((72, 720, 1280), {}, (416, 768)),  # beta = sqrt(2.64): floor(13.86) = 13, floor(24.63) = 24
])
def test_video_smart_resize_by_hand(args, kwargs, expected):
  assert video_smart_resize(*args, **kwargs) == expected
  hf_kwargs = dict(temporal_factor=2, factor=32, min_pixels=4096, max_pixels=25165824) | kwargs
  assert hf_video_smart_resize(*args, **hf_kwargs) == expected


def test_resize_frame_is_close_to_torch_uint8_bicubic():
  # torchvision resizes uint8 CPU tensors with torch's antialiased bicubic; PIL's kernel differs in rounding.
  noise = np.random.default_rng(0).integers(0, 256, (3, 71, 109, 3), dtype=np.uint8)
  for frames in (SOURCE[::30], noise):
    for height, width in [(160, 224), (32, 64), (64, 128)]:
      ours = np.stack([resize_frame(f, height, width) for f in frames])
      x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
      theirs = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
      assert np.abs(ours.astype(int) - theirs.permute(0, 2, 3, 1).numpy()).max() <= 2


# --- preprocessing ------------------------------------------------------------------------------------------------

def hf_patchify(frames: np.ndarray, hf_video_processor) -> np.ndarray:
  """uint8 [T, H, W, 3] already at the target size -> transformers' rescale, normalise and video patchify."""
  x = (rescale(frames, 1 / 255, data_format=None, input_data_format="channels_last") - 0.5) / 0.5
  x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))[None]
  patches, *grid = hf_video_processor.patchify(x, patch_size=16, merge_size=2, temporal_patch_size=2)
  return patches[0].numpy(), grid


def test_preprocess_without_resize_matches_transformers(videos, hf_video_processor):
  clip = read_video(videos["lossless"])
  pixels, grid, timestamps = preprocess_video(clip, VISION)
  expected, hf_grid = hf_patchify(clip.frames, hf_video_processor)
  assert grid.dtype == np.int64 and grid.tolist() == hf_grid == [3, 4, 6]
  np.testing.assert_allclose(pixels, expected, atol=1e-6, rtol=0)
  assert timestamps == clip.timestamps()


def test_preprocess_resize_and_odd_frame_count(hf_video_processor):
  clip = VideoClip(SOURCE[[0, 10, 20, 30, 40]], np.array([0, 10, 20, 30, 40]), 24.0, 0.0, 3.0)
  pixels, grid, timestamps = preprocess_video(clip, VISION, min_pixels=131072)
  # t_bar = 4: 4*64*96 < 131072 -> beta = sqrt(131072 / (5*64*96)): ceil(4.13) = 5, ceil(6.20) = 7
  assert hf_video_smart_resize(5, 64, 96, 2, 32, 131072, 25165824) == (160, 224)
  resized = np.stack([resize_frame(f, 160, 224) for f in clip.frames])
  expected, hf_grid = hf_patchify(resized, hf_video_processor)  # pads the 5th frame to a pair, as ours does
  assert grid.tolist() == hf_grid == [3, 10, 14]
  np.testing.assert_allclose(pixels, expected, atol=1e-6, rtol=0)
  assert timestamps == [(0 / 24 + 10 / 24) / 2, (20 / 24 + 30 / 24) / 2, 40 / 24]


@pytest.mark.parametrize("cap", [False, True])
def test_grid_matches_transformers_patch_count(hf_video_processor, cap):
  clip = VideoClip(np.zeros((4, 720, 1280, 3), np.uint8), np.arange(4), 24.0, 0.0, 1.0)
  _, grid, _ = preprocess_video(clip, VISION, cap_pixels_per_frame=cap)
  # capped: 768 tokens * 32^2 per frame -> max 3145728 < 4*704*1280 -> beta = sqrt(1.17): 640x1152
  assert grid.tolist() == ([2, 40, 72] if cap else [2, 44, 80])
  size = {"shortest_edge": 4096, "longest_edge": 25165824}
  kwargs = {"size": size, "cap_pixels_per_frame": cap}
  assert np.prod(grid) == hf_video_processor.get_num_of_video_patches(4, 720, 1280, kwargs)


def test_timestamps():
  clip = VideoClip(np.zeros((4, 1, 1, 3), np.uint8), np.array([0, 12, 24, 36]), 24.0, 0.0, 3.0)
  assert clip.timestamps() == [0.25, 1.25]
  assert [f"<{t:.1f} seconds>" for t in clip.timestamps()] == ["<0.2 seconds>", "<1.2 seconds>"]
  assert clip.timestamps() == Qwen3VLProcessor._calculate_timestamps(None, [0, 12, 24, 36], 24.0, 2)
  odd = VideoClip(np.zeros((3, 1, 1, 3), np.uint8), np.array([0, 12, 24]), 24.0, 0.0, 3.0)
  assert odd.timestamps() == [0.25, 1.0] == Qwen3VLProcessor._calculate_timestamps(None, [0, 12, 24], 24.0, 2)
  window = VideoClip(np.zeros((4, 1, 1, 3), np.uint8), np.array([24, 36, 48, 60]), 24.0, 1.0, 3.0, first_frame=24)
  assert window.timestamps() == [0.25, 1.25] and window.timestamps(absolute=True) == [1.25, 2.25]


# --- errors ---------------------------------------------------------------------------------------------------------

def test_unreadable_files(tmp_path):
  missing = tmp_path / "missing.mp4"
  with pytest.raises(MediaError, match=re.escape(f"video file not found: {missing}")):
    read_video(missing)
  garbage = tmp_path / "x.mp4"
  garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  no_frames = tmp_path / "no_frames.mp4"  # a valid header, no samples: decord finds no video stream
  write_mp4(no_frames, "libx264", "yuv420p", {}, frames=[])
  for path in (garbage, empty, no_frames):
    with pytest.raises(MediaError, match=re.escape(f"cannot open video {path}")):
      read_video(path)


@pytest.mark.parametrize("start,end,message", [
    (3, None, "start=3.0 end=3.0 is not inside the video (duration 3.000 s)"),
    (2, 1, "start=2.0 end=1.0 is not inside"),
    (1, 1, "start=1.0 end=1.0 is not inside"),
    (-1, 2, "start=-1.0 end=2.0 is not inside"),
    (1.01, 1.02, "start=1.01 end=1.02 holds no frame"),
])
def test_bad_windows(videos, start, end, message):
  with pytest.raises(MediaError, match=re.escape(message)):
    read_video(videos["lossless"], start=start, end=end)


def test_bad_sizes():
  with pytest.raises(MediaError, match="1 frames"):
    preprocess_video(VideoClip(SOURCE[:1], np.array([0]), 24.0, 0.0, 1.0), VISION)
  with pytest.raises(MediaError, match="aspect ratio 203.125"):
    video_smart_resize(4, 32, 6500)
  with pytest.raises(MediaError, match="aspect ratio 210"):  # 10x2100 is scaled up to 32x6720 first
    video_smart_resize(4, 10, 2100)
  with pytest.raises(MediaError, match=r"expected uint8 \[T, H, W, 3\]"):
    preprocess_video(VideoClip(np.zeros((2, 32, 32, 3), np.float32), np.arange(2), 24.0, 0.0, 1.0), VISION)
