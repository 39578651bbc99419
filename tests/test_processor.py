"""Qwen3VLProcessor: placeholder expansion against transformers' text path, left padding, raw media,
the tiny model on its output, and the errors for items that do not line up."""

import json
from types import SimpleNamespace

import av
import numpy as np
import pytest
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor as HFProcessor
from transformers.video_utils import VideoMetadata

from taskmem_jax.models.qwen3_vl import init_random, preset
from taskmem_jax.processing.processor import ProcessorError, Qwen3VLProcessor, VisionInput
from taskmem_jax.processing.tokenizer import build_tiny_tokenizer
from taskmem_jax.processing.video import VideoClip

TINY = preset("tiny")
PATCH_DIM = TINY.vision.patch_dim  # 3 * 2 * 16 * 16
IMG, VID, VS, VE, PAD = 250, 251, 252, 253, 255


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_checkpoint")
  build_tiny_tokenizer(TINY, path)
  with open(path / "config.json", "w") as f:
    json.dump(TINY.to_hf_dict(), f)
  return path


@pytest.fixture(scope="module")
def processor(tiny_dir):
  return Qwen3VLProcessor.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def hf_processor(processor):
  """transformers' processor, text path only: the image and video processors need torchvision, and the
  text path reads nothing from them but merge_size and temporal_patch_size."""

  class TextOnly(HFProcessor):
    def check_argument_for_proper_class(self, name, argument):
      return type(argument)

  return TextOnly(image_processor=SimpleNamespace(merge_size=2), tokenizer=processor.tokenizer,
                  video_processor=SimpleNamespace(merge_size=2, temporal_patch_size=2))


def pixels(grid, seed=0):
  return np.random.default_rng(seed).normal(size=(int(np.prod(grid)), PATCH_DIM)).astype(np.float32)


def image_item(grid=(1, 4, 6)):
  return {"type": "image", "pixel_values": pixels(grid), "grid_thw": list(grid)}


def video_item(grid, timestamps):
  return {"type": "video", "pixel_values": pixels(grid, 1), "grid_thw": list(grid), "timestamps": timestamps}


def user(*content):
  return [{"role": "user", "content": list(content)}]


def test_expansion_matches_transformers(processor, hf_processor):
  # 5 frames sampled at 24 fps -> 3 temporal groups (the last index repeated), 2x2 merged tokens each.
  indices, fps, video_grid, image_grid = [0, 12, 24, 36, 47], 24.0, (3, 4, 4), (1, 4, 6)
  timestamps = hf_processor._calculate_timestamps(indices, fps, 2)
  messages = [{"role": "system", "content": "Watch."},
              {"role": "user", "content": [image_item(image_grid), {"type": "text", "text": "and"},
                                           video_item(video_grid, timestamps)]}]
  text = processor.render(messages)
  ours = processor.expand(text, [processor.prepare(messages[1]["content"][0])],
                          [processor.prepare(messages[1]["content"][2])])
  image_text = hf_processor.replace_image_token({"image_grid_thw": np.array([image_grid])}, 0)
  video_text = hf_processor.replace_video_token(
      {"video_grid_thw": np.array([video_grid]),
       "video_metadata": [VideoMetadata(total_num_frames=48, fps=fps, frames_indices=indices)]}, 0)
  expected = hf_processor.get_text_with_replacements([text], [image_text], [video_text])[0][0]
  assert ours == expected
  assert "<0.2 seconds>" in ours and "<1.2 seconds>" in ours and "<2.0 seconds>" in ours
  batch = processor([messages])
  assert batch["input_ids"][0].tolist() == processor.tokenizer.encode(expected, add_special_tokens=False)
  assert (batch["input_ids"] == IMG).sum() == 6 and (batch["input_ids"] == VID).sum() == 3 * 4
  # The template's own vision_start / vision_end stay around the whole video: 1 + 3 pairs, plus the image's.
  assert (batch["input_ids"] == VS).sum() == 5 and (batch["input_ids"] == VE).sum() == 5


def test_timestamp_format(processor):
  video = VisionInput("video", pixels((2, 2, 2)), np.array([2, 2, 2]), (0.25, 1.25))
  expanded = processor.expand("<|video_pad|>", [], [video])
  # Python rounds 0.25 and 1.25 half-to-even: "0.2", "1.2" (transformers' f"{t:.1f}").
  assert expanded == ("<0.2 seconds><|vision_start|><|video_pad|><|vision_end|>"
                      "<1.2 seconds><|vision_start|><|video_pad|><|vision_end|>")


def test_left_padding(processor):
  short = user({"type": "text", "text": "Hi"})
  long = user(image_item(), {"type": "text", "text": "What is this, in a few words?"})
  batch = processor([short, long])
  assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "image_grid_thw"}
  ids, mask = batch["input_ids"], batch["attention_mask"]
  assert ids.dtype == mask.dtype == np.int32 and ids.shape == mask.shape and ids.shape[0] == 2
  n = len(processor.tokenizer.encode(processor.render(short), add_special_tokens=False))
  assert mask[0].tolist() == [0] * (ids.shape[1] - n) + [1] * n
  assert (ids[0, :-n] == PAD).all() and ids[0, -n:].tolist() == processor([short])["input_ids"][0].tolist()
  assert mask[1].all()
  assert batch["image_grid_thw"].tolist() == [[1, 4, 6]] and batch["pixel_values"].shape == (24, PATCH_DIM)
  # A single conversation needs no outer list; text only gives no pixel keys.
  assert set(processor(short)) == {"input_ids", "attention_mask"}


def test_thinking_prompt(processor):
  ids = processor(user({"type": "text", "text": "Hi"}), thinking=True)["input_ids"][0]
  assert processor.tokenizer.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n")
  assert ids[-2] == 247  # <think> is one token


def write_mp4(path, frames, fps=24):
  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264rgb", rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt, stream.options = "rgb24", {"qp": "0"}
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def test_raw_media_and_tiny_model(processor, tmp_path):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (48, 64, 64, 3), dtype=np.uint8)
  write_mp4(tmp_path / "clip.mp4", frames)
  image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
  clip = VideoClip(frames[[0, 12, 24, 36]], np.array([0, 12, 24, 36]), 24.0, 0.0, 2.0)
  small = Qwen3VLProcessor(processor.tokenizer, TINY, image_kwargs={"min_pixels": 1024})
  conversations = [
      user({"type": "image", "image": image}, {"type": "text", "text": "Describe."}),
      user({"type": "text", "text": "What happens?"}, {"type": "video", "video": clip}),
      # The file's [0.5 s, 2 s) window: 36 frames, 3 at fps 2, raised to min_frames 4 -> 2 temporal groups.
      user({"type": "video", "video": str(tmp_path / "clip.mp4"), "video_start": 0.5, "video_end": 2.0}),
  ]
  batch = small(conversations)
  assert batch["image_grid_thw"].tolist() == [[1, 4, 6]]  # 64x96 needs no resize at min_pixels=1024
  assert batch["video_grid_thw"].tolist() == [[2, 4, 4], [2, 4, 4]]
  assert batch["pixel_values_videos"].shape == (64, PATCH_DIM)
  text = small.tokenizer.decode(batch["input_ids"][1])
  assert "<0.2 seconds>" in text and "<1.2 seconds>" in text  # clip indices [0, 12, 24, 36] at 24 fps
  logits = np.asarray(init_random(TINY)(**batch))
  assert logits.shape == (3, batch["input_ids"].shape[1], 256) and np.isfinite(logits).all()


def test_mismatched_items(processor):
  typed = {"type": "text", "text": "<|vision_start|><|image_pad|><|vision_end|>"}
  with pytest.raises(ProcessorError, match=r"conversation 1: the prompt has 2 <\|image_pad\|> placeholder\(s\) but "
                                           r"the messages hold 1 image\(s\)"):
    processor([user({"type": "text", "text": "ok"}), user(image_item(), typed)])
  # The Instruct template drops images in assistant turns, so the item has no placeholder.
  messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [image_item()]}]
  with pytest.raises(ProcessorError, match=r"0 <\|image_pad\|> placeholder\(s\) but the messages hold 1 image"):
    processor([messages])
  with pytest.raises(ProcessorError, match=r"2 <\|video_pad\|> placeholder\(s\) but the messages hold 1 video"):
    processor.expand("<|video_pad|><|video_pad|>", [], [processor.prepare(video_item((2, 2, 2), [0.0, 1.0]))])


def test_malformed_items(processor):
  with pytest.raises(ProcessorError, match=r"pixel_values shape \(24, 1536\) does not match grid_thw=\[1, 4, 4\]"):
    processor.prepare({"type": "image", "pixel_values": pixels((1, 4, 6)), "grid_thw": [1, 4, 4]})
  with pytest.raises(ProcessorError, match=r"grid_thw=\[1, 3, 6\] .*multiples of spatial_merge_size=2"):
    processor.prepare({"type": "image", "pixel_values": pixels((1, 3, 6)), "grid_thw": [1, 3, 6]})
  with pytest.raises(ProcessorError, match="1 timestamps for 2 temporal groups"):
    processor.prepare(video_item((2, 2, 2), [0.0]))
  with pytest.raises(ProcessorError, match="needs both 'pixel_values' and 'grid_thw'"):
    processor.prepare({"type": "video", "pixel_values": pixels((2, 2, 2))})
  with pytest.raises(ProcessorError, match="'video' must be a path or a VideoClip"):
    processor.prepare({"type": "video", "video": np.zeros((4, 32, 32, 3), np.uint8)})
  with pytest.raises(ProcessorError, match=r"video_kwargs: unknown option\(s\) \['start'\]"):
    Qwen3VLProcessor(processor.tokenizer, TINY, video_kwargs={"start": 1.0})
