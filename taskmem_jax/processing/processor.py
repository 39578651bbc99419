"""Conversations with images and videos -> the model's inputs, as transformers' Qwen3VLProcessor builds them.

For each conversation: render the chat template, preprocess its images and videos in message order,
expand every placeholder to one token per merged patch, tokenize; then left-pad the batch.
Placeholder expansion follows transformers 5.23:
- ``<|image_pad|>`` -> ``<|image_pad|>`` x (t*h*w / merge^2);
- ``<|video_pad|>`` -> for each temporal group i: ``<{ts_i:.1f} seconds><|vision_start|>`` +
  ``<|video_pad|>`` x (h*w / merge^2) + ``<|vision_end|>``. The template's own ``<|vision_start|>`` and
  ``<|vision_end|>`` stay around the whole video (4.57 and vLLM replace them: 2 tokens fewer).

Message items (the chat template decides the types exactly this way, so placeholders and items line up):
- image: ``{"type": "image", "image": path | uint8 [H, W, 3] | PIL.Image}``, optional "min_pixels",
  "max_pixels";
- video: ``{"type": "video", "video": path}`` with optional "video_start" / "video_end" (seconds), "fps",
  "min_frames", "max_frames", "min_pixels", "max_pixels", or ``{"type": "video", "video": VideoClip}``;
- either kind already preprocessed: ``{"type": ..., "pixel_values": [N, C*T*P*P], "grid_thw": [3]}``,
  videos with ``"timestamps"`` (seconds, one per temporal group), so callers can cache them per clip.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np

from taskmem_jax.models.qwen3_vl.config import Qwen3VLConfig
from taskmem_jax.processing import image as image_lib
from taskmem_jax.processing import video as video_lib
from taskmem_jax.processing.tokenizer import apply_chat_template, check_tokenizer, load_tokenizer

IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
_PLACEHOLDER = re.compile(f"{re.escape(IMAGE_PAD)}|{re.escape(VIDEO_PAD)}")

# Options a message item (or the processor's defaults) may set, by the function they go to.
_IMAGE_OPTIONS = ("min_pixels", "max_pixels")
_READ_OPTIONS = {"video_start": "start", "video_end": "end", "fps": "fps", "min_frames": "min_frames",
                 "max_frames": "max_frames"}
_VIDEO_OPTIONS = ("min_pixels", "max_pixels", "cap_pixels_per_frame", "absolute_timestamps")


class ProcessorError(ValueError):
  """Messages whose images, videos and placeholders do not line up, or a malformed item."""


@dataclasses.dataclass(frozen=True)
class VisionInput:
  """One preprocessed image or video.

  pixel_values: [t*h*w, C*T*P*P] float32; grid_thw: int64 [3] = (t, h, w) in patches;
  timestamps: videos only, seconds of each of the t temporal groups.
  """
  kind: str
  pixel_values: np.ndarray
  grid_thw: np.ndarray
  timestamps: tuple[float, ...] = ()


def item_kind(item: Any) -> str | None:
  """The item's kind: 'image', 'video' or None, decided as the Qwen3-VL chat templates decide it."""
  if not isinstance(item, dict):
    return None
  if item.get("type") == "image" or "image" in item or "image_url" in item:
    return "image"
  if item.get("type") == "video" or "video" in item:
    return "video"
  return None


class Qwen3VLProcessor:
  """Tokenizer + model config -> batches for ``Qwen3VLForConditionalGeneration``.

  image_kwargs / video_kwargs: defaults for the message-item options listed in the module docstring
  (an item's own keys win). The memory window prompt a checkpoint was trained with is not the
  processor's: memory.prompt.read_window_prompt reads it, and the memory functions take it as prompt=.
  """

  def __init__(self, tokenizer, config: Qwen3VLConfig, *, image_kwargs: dict | None = None,
               video_kwargs: dict | None = None):
    check_tokenizer(tokenizer, config)
    self.tokenizer = tokenizer
    self.config = config
    self.image_kwargs = _options(image_kwargs or {}, _IMAGE_OPTIONS, "image_kwargs")
    self.video_kwargs = _options(video_kwargs or {}, ("fps", "min_frames", "max_frames", *_VIDEO_OPTIONS),
                                 "video_kwargs")
    self.pad_token_id = tokenizer.pad_token_id
    if self.pad_token_id is None:
      self.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if self.pad_token_id is None:
      raise ProcessorError("the tokenizer has no pad token and no <|endoftext|> to pad with")

  @classmethod
  def from_pretrained(cls, checkpoint_dir: str | os.PathLike, **kwargs) -> "Qwen3VLProcessor":
    """From a checkpoint directory: config.json and the tokenizer files."""
    config = Qwen3VLConfig.from_json_file(os.path.join(os.fspath(checkpoint_dir), "config.json"))
    return cls(load_tokenizer(checkpoint_dir), config, **kwargs)

  @property
  def stop_token_ids(self) -> list[int]:
    """The ids that end an assistant turn: <|im_end|>, <|endoftext|> and the tokenizer's eos, sorted."""
    tokenizer = self.tokenizer
    ids = (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"),
           tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    return sorted({i for i in ids if isinstance(i, int)})

  @property
  def merge_length(self) -> int:
    return self.config.vision.spatial_merge_size**2

  # --- one item -------------------------------------------------------------------------------

  def prepare(self, item: dict[str, Any]) -> VisionInput:
    """One image or video message item -> VisionInput (reads and preprocesses media files)."""
    kind = item_kind(item)
    if kind is None:
      raise ProcessorError(f"not an image or video item: keys {sorted(item) if isinstance(item, dict) else item!r}")
    if "pixel_values" in item or "grid_thw" in item:
      return self._preprocessed(kind, item)
    vision = self.config.vision
    if kind == "image":
      source = item.get("image", item.get("path"))
      if source is None:
        raise ProcessorError(f"image item: needs 'image' (a path, PIL image or uint8 array); got keys {sorted(item)}")
      pixels, grid = image_lib.preprocess_image(source, vision, **self._item_options(item, self.image_kwargs,
                                                                                    _IMAGE_OPTIONS))
      return VisionInput("image", pixels, grid)

    source = item.get("video", item.get("path"))
    if isinstance(source, (str, os.PathLike)):
      read = self._item_options(item, self.video_kwargs, _READ_OPTIONS)
      clip = video_lib.read_video(source, **{_READ_OPTIONS[k]: v for k, v in read.items()})
    elif isinstance(source, video_lib.VideoClip):
      clip = source
    else:
      raise ProcessorError(f"video item: 'video' must be a path or a VideoClip, got {type(source).__name__}")
    pixels, grid, timestamps = video_lib.preprocess_video(
        clip, vision, **self._item_options(item, self.video_kwargs, _VIDEO_OPTIONS))
    return VisionInput("video", pixels, grid, tuple(float(t) for t in timestamps))

  def _item_options(self, item: dict, defaults: dict, names) -> dict:
    return {k: item[k] if k in item else defaults[k] for k in names if k in item or k in defaults}

  def _preprocessed(self, kind: str, item: dict) -> VisionInput:
    """Checks a cached item: rows match the grid, the grid merges, videos have one time per group."""
    if "pixel_values" not in item or "grid_thw" not in item:
      raise ProcessorError(f"preprocessed {kind} item: needs both 'pixel_values' and 'grid_thw'")
    pixels = np.asarray(item["pixel_values"], np.float32)
    grid = np.asarray(item["grid_thw"], np.int64).reshape(-1)
    vision = self.config.vision
    merge = vision.spatial_merge_size
    if grid.shape != (3,) or (grid <= 0).any() or grid[1] % merge or grid[2] % merge:
      raise ProcessorError(f"preprocessed {kind} item: grid_thw={grid.tolist()} must be 3 positive "
                           f"integers (t, h, w) with h and w multiples of spatial_merge_size={merge}")
    if pixels.shape != (int(grid.prod()), vision.patch_dim):
      raise ProcessorError(f"preprocessed {kind} item: pixel_values shape {pixels.shape} does not match "
                           f"grid_thw={grid.tolist()}, which needs {(int(grid.prod()), vision.patch_dim)}")
    timestamps = ()
    if kind == "video":
      timestamps = tuple(float(t) for t in item.get("timestamps", ()))
      if len(timestamps) != grid[0]:
        raise ProcessorError(f"preprocessed video item: {len(timestamps)} timestamps for {grid[0]} temporal "
                             "groups; give 'timestamps' with one time in seconds per group")
    return VisionInput(kind, pixels, grid, timestamps)

  # --- text -----------------------------------------------------------------------------------

  def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
             thinking: bool | None = None, **template_kwargs) -> str:
    """The chat template's prompt for one conversation, one placeholder per image / video."""
    return apply_chat_template(self.tokenizer, messages, add_generation_prompt=add_generation_prompt,
                               thinking=thinking, **template_kwargs)

  def expand(self, text: str, images: list[VisionInput], videos: list[VisionInput]) -> str:
    """Replaces the i-th <|image_pad|> / <|video_pad|> of text by the tokens of images[i] / videos[i]."""
    _check_counts(text.count(IMAGE_PAD), len(images), text.count(VIDEO_PAD), len(videos))
    images, videos = iter(images), iter(videos)

    def replace(match: re.Match) -> str:
      if match.group() == IMAGE_PAD:
        return IMAGE_PAD * (int(next(images).grid_thw.prod()) // self.merge_length)
      video = next(videos)
      per_frame = VISION_START + VIDEO_PAD * (int(video.grid_thw[1:].prod()) // self.merge_length) + VISION_END
      return "".join(f"<{t:.1f} seconds>{per_frame}" for t in video.timestamps)

    return _PLACEHOLDER.sub(replace, text)

  # --- batch ----------------------------------------------------------------------------------

  def __call__(self, conversations: list[list[dict[str, Any]]], *, add_generation_prompt: bool = True,
               thinking: bool | None = None, **template_kwargs) -> dict[str, np.ndarray]:
    """A batch of conversations (or one conversation) -> the model's keyword arguments.

    Returns input_ids [B, L] int32 and attention_mask [B, L] int32, left-padded with the pad id; plus
    pixel_values [N, C*T*P*P] float32 and image_grid_thw [n, 3] int64 when there are images, and
    pixel_values_videos / video_grid_thw when there are videos (in batch order, as the model expects).
    thinking: see tokenizer.apply_chat_template.
    """
    if isinstance(conversations, (list, tuple)) and conversations and isinstance(conversations[0], dict):
      conversations = [conversations]
    if not conversations:
      raise ProcessorError("no conversations given")
    texts, images, videos = [], [], []
    for b, messages in enumerate(conversations):
      text = self.render(messages, add_generation_prompt=add_generation_prompt, thinking=thinking,
                         **template_kwargs)
      items = [item for message in messages if isinstance(message.get("content"), (list, tuple))
               for item in message["content"] if item_kind(item)]
      image_items = [item for item in items if item_kind(item) == "image"]
      video_items = [item for item in items if item_kind(item) == "video"]
      try:  # counts first, so a mismatch is reported before any media file is read
        _check_counts(text.count(IMAGE_PAD), len(image_items), text.count(VIDEO_PAD), len(video_items))
      except ProcessorError as e:
        raise ProcessorError(f"conversation {b}: {e}") from None
      conv_images = [self.prepare(item) for item in image_items]
      conv_videos = [self.prepare(item) for item in video_items]
      texts.append(self.expand(text, conv_images, conv_videos))
      images.append(conv_images)
      videos.append(conv_videos)

    ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
    for b, (row, conv_images, conv_videos) in enumerate(zip(ids, images, videos)):
      self._check_tokens(b, row, conv_images, conv_videos)
    batch = _left_pad(ids, self.pad_token_id)
    images = [x for conv in images for x in conv]
    videos = [x for conv in videos for x in conv]
    if images:
      batch["pixel_values"] = np.concatenate([x.pixel_values for x in images])
      batch["image_grid_thw"] = np.stack([x.grid_thw for x in images])
    if videos:
      batch["pixel_values_videos"] = np.concatenate([x.pixel_values for x in videos])
      batch["video_grid_thw"] = np.stack([x.grid_thw for x in videos])
    return batch

  def _check_tokens(self, b: int, row: list[int], images: list[VisionInput], videos: list[VisionInput]) -> None:
    """Guards against a tokenizer that splits a placeholder or merges it with its neighbours."""
    row = np.asarray(row)
    for token, token_id, items in ((IMAGE_PAD, self.config.image_token_id, images),
                                   (VIDEO_PAD, self.config.video_token_id, videos)):
      expected = sum(int(x.grid_thw.prod()) for x in items) // self.merge_length
      found = int((row == token_id).sum())
      if found != expected:
        raise ProcessorError(f"conversation {b}: tokenizing gave {found} {token} tokens (id {token_id}) where "
                             f"the grids need {expected}; the tokenizer must keep {token} as one token")


def _options(given: dict, allowed, name: str) -> dict:
  unknown = sorted(set(given) - set(allowed))
  if unknown:
    raise ProcessorError(f"{name}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
  return dict(given)


def _check_counts(image_pads: int, images: int, video_pads: int, videos: int) -> None:
  for kind, pads, n in (("image", image_pads, images), ("video", video_pads, videos)):
    if pads != n:
      raise ProcessorError(
          f"the prompt has {pads} {IMAGE_PAD if kind == 'image' else VIDEO_PAD} placeholder(s) but the "
          f"messages hold {n} {kind}(s). The chat template decides which items it renders (the Instruct "
          "template renders images and videos only in user and tool messages), and placeholder text typed "
          "into a message counts too")


def _left_pad(rows: list[list[int]], pad_id: int) -> dict[str, np.ndarray]:
  """Token rows -> input_ids [B, L] and attention_mask [B, L], int32, padding on the left."""
  length = max(len(r) for r in rows)
  input_ids = np.full((len(rows), length), pad_id, np.int32)
  attention_mask = np.zeros((len(rows), length), np.int32)
  for b, row in enumerate(rows):
    if row:
      input_ids[b, length - len(row):] = row
      attention_mask[b, length - len(row):] = 1
  return {"input_ids": input_ids, "attention_mask": attention_mask}
