"""The streaming memory rollout as one jitted ``lax.scan`` over clips.

Each step shows the policy a window: up to 5 clip slots (4 previous clips and the new one) and the
memories written for the previous clips, and decodes the new clip's memory. On device:
- The window prompt lives in one fixed-size buffer (``WindowTemplate``). Clip slots that are not in
  use yet, memory slots that are shorter than their width, and separators between missing memories
  are masked. Positions come from the mask (``layout_positions``), so each step is equivalent to the
  compact prompt with the masked slots removed (``compact_prompt``).
- Vision and DeepStack features are encoded once per clip, before the scan, and gathered into each
  window that shows the clip. The official pipeline re-encodes the whole 50-s window at every step.
- The carry is a ring buffer of the last 4 memories (token ids [B, 4, M] and lengths [B, 4]) and the
  RNG. The new memory is cut out of the response at the token level (``TokenFormat``) and pushed.

``rollout_reference`` runs the same steps as a Python loop over ``sampling.generate`` on the compact
prompts; tests check that both give identical memories under greedy decoding.

The template is the window prompt of memory/prompt.py, rendered by the processor's chat template
and tokenized piece by piece (fixed text, each clip slot, each memory), so memories can be spliced
in as token ids.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taskmem_jax import sharding as shd
from taskmem_jax.memory.prompt import WindowPrompt, window_messages
from taskmem_jax.memory.store import MAX_PREVIOUS
from taskmem_jax.models.qwen3_vl.layout import BufferLayout, concat, layout_positions, text_slots, vision_group_slots
from taskmem_jax.models.qwen3_vl.model import ModelInputs
from taskmem_jax.processing.processor import VIDEO_PAD, Qwen3VLProcessor
from taskmem_jax.sampling import sampler

Array = jax.Array
CLIP_SLOTS = MAX_PREVIOUS + 1
_MEMORY_SENTINEL = "MEMORYSLOT{}"


@dataclasses.dataclass(frozen=True)
class TokenFormat:
  """Where the memory sits in a response, at the token level: after the one think_end token comes
  `prefix` (the tokens of '{"description": "'), then the memory, then `close` (the tokens of '"}'), then one of
  `stops` or the end of the tokens (stops empty: anything may follow)."""
  think_end: int
  prefix: tuple[int, ...]
  close: tuple[int, ...]
  stops: tuple[int, ...] = ()

  @classmethod
  def from_tokenizer(cls, tokenizer, stops=()) -> "TokenFormat":
    encode = lambda text: tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
    return cls(tokenizer.convert_tokens_to_ids("</think>"), encode('{"description": "'), encode('"}'),
               tuple(int(x) for x in stops))


class WindowTemplate(NamedTuple):
  """A window prompt buffer of L slots (NumPy, static).

  ids: [L] the fixed tokens (placeholders in memory slots); fixed: [L] bool, always real;
  clip_slot: [L] which clip slot (0..4) a video token belongs to, else -1; memory_slot, memory_offset:
  [L] memory slot (0..3) and offset of memory tokens, else -1; separator_of: [L] memory slot a
  separator precedes, else -1; vision_offset: [L] for vision tokens, slot * clip_tokens + index, else -1.
  """
  ids: np.ndarray
  fixed: np.ndarray
  clip_slot: np.ndarray
  memory_slot: np.ndarray
  memory_offset: np.ndarray
  separator_of: np.ndarray
  vision_offset: np.ndarray
  layout: BufferLayout
  memory_width: int
  clip_tokens: int
  clip_grid: tuple[int, int, int]
  clip_slots: int = CLIP_SLOTS

  @property
  def length(self) -> int:
    return len(self.ids)


def build_template(processor: Qwen3VLProcessor, clip_grid, clip_timestamps, memory_width: int,
                   task_questions: list[str] | None = None, interval: float = 10.0, *,
                   prompt: WindowPrompt, clip_slots: int = CLIP_SLOTS) -> WindowTemplate:
  """The window prompt (prompt: the policy's, memory.prompt.read_window_prompt) as a buffer: clip slot j shows a clip of grid clip_grid (t, h, w) whose frame
  groups sit at interval*j + clip_timestamps seconds of the window; memory slots hold memory_width
  tokens each. clip_slots < 5: the buffer of a stream's first windows, which show fewer clips."""
  if not 1 <= clip_slots <= CLIP_SLOTS:
    raise ValueError(f"clip_slots={clip_slots}: a window shows 1 to {CLIP_SLOTS} clips")
  tokenizer, config = processor.tokenizer, processor.config
  encode = lambda text: list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
  t, h, w = (int(x) for x in clip_grid)
  if len(clip_timestamps) != t:
    raise ValueError(f"clip_timestamps: {len(clip_timestamps)} given for {t} temporal groups")
  merge = config.vision.spatial_merge_size
  per_group = (h // merge) * (w // merge)
  video = {"type": "video", "pixel_values": np.zeros((t * h * w, config.vision.patch_dim), np.float32),
           "grid_thw": [t, h, w], "timestamps": list(clip_timestamps)}
  sentinels = [_MEMORY_SENTINEL.format(m) for m in range(MAX_PREVIOUS)]
  text = processor.render(window_messages(video, sentinels, task_questions, prompt=prompt), thinking=True)
  if text.count(VIDEO_PAD) != 1 or any(text.count(s) != 1 for s in sentinels):
    raise ValueError("the chat template did not render the window prompt with one video and four memories")
  # Fixed text and markers in prompt order: the video and the four memories, in either layout.
  pieces = re.split("(" + "|".join(map(re.escape, [VIDEO_PAD, *sentinels])) + ")", text)
  markers = pieces[1::2]
  first = markers.index(sentinels[0])
  if markers[first:first + MAX_PREVIOUS] != sentinels:
    raise ValueError(f"the memories are not rendered next to each other, in order: {markers}")
  separators = pieces[2 * first + 2:2 * (first + MAX_PREVIOUS):2]  # the text between memory m-1 and m
  if len(set(separators)) != 1:
    raise ValueError(f"memories are not joined by one separator: {separators!r}")

  ids, fixed, clip_slot, memory_slot, memory_offset, separator_of, vision_offset, parts = ([] for _ in range(8))

  def add(tokens, layout: BufferLayout, *, is_fixed=False, clip=-1, mem=-1, offset=None, sep=-1, vision=None):
    n = len(tokens)
    ids.extend(tokens)
    fixed.extend([is_fixed] * n)
    clip_slot.extend([clip] * n)
    memory_slot.extend([mem] * n)
    memory_offset.extend(offset if offset is not None else [-1] * n)
    separator_of.extend([sep] * n)
    vision_offset.extend(vision if vision is not None else [-1] * n)
    parts.append(layout)

  def add_text(text):
    tokens = encode(text)
    if tokens:  # two markers can be adjacent
      add(tokens, text_slots(len(tokens)), is_fixed=True)

  separator = encode(separators[0])
  for i, piece in enumerate(pieces):
    if i % 2 == 0:  # text; between memory slots m-1 and m it is the separator (window_mask says when it is real)
      m = (i - 2 * first) // 2
      if 0 < m < MAX_PREVIOUS:
        add(separator, text_slots(len(separator)), sep=m)
      else:
        add_text(piece)
    elif piece == VIDEO_PAD:
      for j in range(clip_slots):
        for g, seconds in enumerate(clip_timestamps):
          stamp = encode(f"<{interval * j + seconds:.1f} seconds>") + [config.vision_start_token_id]
          add(stamp, text_slots(len(stamp)), clip=j)
          add([config.video_token_id] * per_group, vision_group_slots(h, w, merge), clip=j,
              vision=list(j * t * per_group + g * per_group + np.arange(per_group)))
          add([config.vision_end_token_id], text_slots(1), clip=j)
    else:
      m = sentinels.index(piece)
      add([processor.pad_token_id] * memory_width, text_slots(memory_width), mem=m, offset=list(range(memory_width)))
  as_int = lambda x: np.asarray(x, np.int32)
  return WindowTemplate(as_int(ids), np.asarray(fixed, bool), as_int(clip_slot), as_int(memory_slot),
                        as_int(memory_offset), as_int(separator_of), as_int(vision_offset), concat(parts),
                        memory_width, t * per_group, (t, h, w), clip_slots)


def window_mask(template: WindowTemplate, step, ring_lengths):
  """Which slots hold real tokens at scan step `step` (clip `step` is new; a scalar, or [B] per row).
  ring_lengths: [B, 4].

  Clip slots fill left to right until the window is full; memories are right-aligned in the ring.
  Returns (mask [B, L] int32, clip of each slot [B, S] int32, S = template.clip_slots).
  """
  b = ring_lengths.shape[0]
  last = template.clip_slots - 1
  step = jnp.broadcast_to(jnp.asarray(step, jnp.int32), (b,))[:, None]  # [B, 1]
  slots = jnp.arange(template.clip_slots)[None]
  clip_of_slot = jnp.where(step < last, slots, step - last + slots)  # [B, S]
  clip_slot = jnp.broadcast_to(jnp.maximum(jnp.asarray(template.clip_slot), 0)[None], (b, template.length))
  clip_real = jnp.take_along_axis(clip_of_slot <= step, clip_slot, axis=1) & (jnp.asarray(template.clip_slot) >= 0)[None]
  has = ring_lengths > 0  # [B, 4]
  memory_real = (template.memory_slot >= 0)[None] & (
      jnp.asarray(template.memory_offset)[None] < jnp.take(ring_lengths, jnp.maximum(template.memory_slot, 0), axis=1))
  # A separator goes between two memories that exist: before slot m if m and some earlier slot do.
  earlier = jnp.cumsum(has, axis=1) - has
  sep_slot = jnp.maximum(template.separator_of, 0)
  separator_real = (template.separator_of >= 0)[None] & jnp.take(has & (earlier > 0), sep_slot, axis=1)
  mask = jnp.asarray(template.fixed)[None] | clip_real | memory_real | separator_real
  return mask.astype(jnp.int32), clip_of_slot.astype(jnp.int32)


def window_inputs(template: WindowTemplate, step, ring_tokens, ring_lengths) -> tuple[ModelInputs, Array]:
  """The buffer prompt of one step for a batch (ring_tokens [B, 4, M], ring_lengths [B, 4]; step a scalar or
  [B]), and the clip each clip slot shows [B, S] (window_mask; S = template.clip_slots).

  vision_index points into features laid out [B, S slots, clip_tokens] (flattened), see gather_features.
  """
  b = ring_tokens.shape[0]
  mask, clip_of_slot = window_mask(template, step, ring_lengths)
  memory = template.memory_slot >= 0
  spliced = ring_tokens[:, jnp.maximum(template.memory_slot, 0), jnp.maximum(template.memory_offset, 0)]
  ids = jnp.where(memory[None], spliced, jnp.asarray(template.ids)[None])
  positions, deltas = layout_positions(template.layout, mask)
  per_row = template.clip_slots * template.clip_tokens
  vision = jnp.asarray(template.vision_offset)[None]
  vision_index = jnp.where(vision >= 0, vision + per_row * jnp.arange(b)[:, None], -1)
  return ModelInputs(ids.astype(jnp.int32), mask, positions, deltas, vision_index.astype(jnp.int32)), clip_of_slot


def gather_features(features, deepstack, clip_of_slot):
  """features: [B, n_clips, clip_tokens, H], clip_of_slot [B, S] -> the window's [B * S * clip_tokens, H] (and
  DeepStack)."""
  take = lambda f: jnp.take_along_axis(f, clip_of_slot[:, :, None, None], axis=1).reshape(-1, f.shape[-1])
  return take(features), [take(d) for d in deepstack]


def cut_memory(tokens: Array, fmt: TokenFormat, width: int) -> tuple[Array, Array]:
  """tokens: [B, T] responses -> (memory tokens [B, width], 0-padded; lengths [B], 0 when the
  response breaks the format: not exactly one think_end, no prefix after it, no close after the memory (or
  the close not followed by a stop or the end), empty, or longer than width)."""
  t = tokens.shape[1]
  is_end = tokens == fmt.think_end
  end = jnp.argmax(is_end, axis=1)
  start = end + 1 + len(fmt.prefix)
  prefix = jnp.asarray(fmt.prefix or (0,), jnp.int32)
  at = jnp.minimum(end[:, None] + 1 + jnp.arange(len(prefix)), t - 1)
  prefix_ok = jnp.all(jnp.take_along_axis(tokens, at, axis=1) == prefix[None], axis=1) if fmt.prefix else True
  n = len(fmt.close)
  index = jnp.minimum(jnp.arange(t)[:, None] + jnp.arange(n)[None], t - 1)  # [T, n]
  closes = jnp.all(tokens[:, index] == jnp.asarray(fmt.close, jnp.int32)[None, None], axis=2)
  closes &= (jnp.arange(t)[None] >= start[:, None]) & (jnp.arange(t) + n <= t)[None]
  close_at = jnp.argmax(closes, axis=1)
  length = close_at - start
  ok = (jnp.sum(is_end, axis=1) == 1) & prefix_ok & jnp.any(closes, axis=1) & (length > 0) & (length <= width)
  if fmt.stops:  # what follows the close: a stop token, or nothing
    after = close_at + n
    follower = jnp.take_along_axis(tokens, jnp.minimum(after, t - 1)[:, None], axis=1)[:, 0]
    ok &= (after >= t) | jnp.isin(follower, jnp.asarray(fmt.stops, jnp.int32))
  length = jnp.where(ok, length, 0)
  picked = jnp.take_along_axis(tokens, jnp.minimum(start[:, None] + jnp.arange(width), t - 1), axis=1)
  return jnp.where(jnp.arange(width)[None] < length[:, None], picked, 0), length


def push(ring_tokens, ring_lengths, memory, length):
  """Drops the oldest memory, appends the new one (right-aligned ring)."""
  return (jnp.concatenate([ring_tokens[:, 1:], memory[:, None]], axis=1),
          jnp.concatenate([ring_lengths[:, 1:], length[:, None]], axis=1))


class RolloutOutput(NamedTuple):
  """Per clip (leading axis) and row: tokens [n, B, T], logprobs [n, B, T], lengths [n, B] (response
  tokens, stop included), memories [n, B, M] and memory_lengths [n, B] (0: no valid memory)."""
  tokens: np.ndarray
  logprobs: np.ndarray
  lengths: np.ndarray
  memories: np.ndarray
  memory_lengths: np.ndarray


def window_step(model, template: WindowTemplate, params: sampler.SamplingParams, fmt: TokenFormat, features,
                deepstack, first_clip, ring_tokens, ring_lengths, step, key, num_samples: int = 1):
  """One window of B rows, prefilled once and decoded num_samples times per row (traceable): features [B, F,
  clip_tokens, H] for clips first_clip ..; the ring [B, 4, M] / [B, 4]; step: the window's new clip. Returns
  (tokens, logprobs [B*num_samples, T], response lengths, memories [B*num_samples, M], memory lengths)."""
  inputs, clip_of_slot = window_inputs(template, step, ring_tokens, ring_lengths)
  feats, ds = gather_features(features, deepstack, jnp.clip(clip_of_slot - first_clip, 0, features.shape[1] - 1))
  logits, cache, kv_mask, next_position = sampler.prefill(model, inputs, template.length + params.max_new_tokens,
                                                          num_samples, feats, ds)
  out = sampler.decode(model, sampler.init_decode_state(logits, cache, params, key), kv_mask, next_position,
                       template.length, params, params.max_new_tokens)
  memory, length = cut_memory(out.tokens, fmt, template.memory_width)
  return out.tokens, out.logprobs, sampler.response_lengths(out.tokens, out.step, params.stop_token_ids), memory, length


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _one_window(graphdef, shape: tuple, params: sampler.SamplingParams, fmt: TokenFormat, num_samples: int, state,
                arrays, features, deepstack, ring_tokens, ring_lengths, step, key):
  """window_step jitted: B single windows, each with its own step (so windows of every size share it), num_samples
  each."""
  TRACE_COUNTS["one_window"] += 1
  return window_step(nnx.merge(graphdef, state), _joined(shape, arrays), params, fmt, features, deepstack, 0, ring_tokens,
                     ring_lengths, step, key, num_samples)


def sample_window_batch(model, template: WindowTemplate, features, deepstack, ring, steps,
                        params: sampler.SamplingParams, fmt: TokenFormat, seed: int = 0,
                        num_samples: int = 1, window_ids=None) -> RolloutOutput:
  """B windows, window b showing clips 0 .. steps[b] of features [B, S, clip_tokens, H] (S = the template's clip
  slots; steps[b] < S) and the memories in ring (tokens [B, 4, M], lengths [B, 4]), num_samples samples each
  from one prefill; rows b * num_samples + s. One program for windows of every size. Outputs have a leading
  axis of 1 (one window), as rollout's. Row b * num_samples + s draws with the key fold_in(fold_in(key(seed),
  window_ids[b]), s) (window_ids default 0 .. B-1), so a window's samples do not depend on its batch."""
  graphdef, state = nnx.split(model)
  shape, arrays = _split(template)
  ys = _one_window(graphdef, shape, params, fmt, num_samples, state, arrays, features, deepstack,
                   jnp.asarray(ring[0], jnp.int32), jnp.asarray(ring[1], jnp.int32), jnp.asarray(steps, jnp.int32),
                   row_keys(seed, np.arange(len(steps)) if window_ids is None else window_ids, num_samples))
  return RolloutOutput(*(np.asarray(y)[None] for y in ys))


def row_keys(seed: int, window_ids, num_samples: int):
  """[len(window_ids) * num_samples] keys: fold_in(fold_in(key(seed), window id), sample)."""
  base = jax.random.key(seed)
  ids = jnp.repeat(jnp.asarray(window_ids, jnp.int32), num_samples)
  samples = jnp.tile(jnp.arange(num_samples, dtype=jnp.int32), len(window_ids))
  return jax.vmap(lambda i, s: jax.random.fold_in(jax.random.fold_in(base, i), s))(ids, samples)


def build_templates(processor: Qwen3VLProcessor, clip_grid, clip_timestamps, memory_width: int,
                    task_questions: list[str] | None = None, interval: float = 10.0, *,
                    prompt: WindowPrompt) -> tuple[WindowTemplate, ...]:
  """build_template for 1 .. 5 clip slots, each left-padded to a bucket (pad_template):
  templates[c - 1] is the buffer of a window showing c clips. A stream's first 4 windows use the small ones, so
  they do not pay for the full window's empty slots; and prompts whose lengths share a bucket (with and
  without a hint, another policy's prompt) share the compiled programs, since the buffer's contents are
  inputs of the program, not constants."""
  return tuple(pad_template(build_template(processor, clip_grid, clip_timestamps, memory_width, task_questions,
                                           interval, prompt=prompt, clip_slots=c))
               for c in range(1, CLIP_SLOTS + 1))


def pad_template(template: WindowTemplate, length: int | None = None) -> WindowTemplate:
  """The template left-padded with masked slots to `length` (default: its length rounded up to a multiple of
  256, so that prompts a hint apart mostly share it and at most 255 slots are padding). Masked slots hold no
  token and move no position, and the last slot stays the prompt's last."""
  length = -(-template.length // 256) * 256 if length is None else length
  extra = length - template.length
  if extra < 0:
    raise ValueError(f"pad_template: length {length} is shorter than the template's {template.length}")
  pad = lambda x, value: np.concatenate([np.full(extra, value, x.dtype), x])
  layout = BufferLayout(pad(template.layout.advance, 0), pad(template.layout.row, 0), pad(template.layout.col, 0),
                        pad(template.layout.vision, False))
  return template._replace(ids=pad(template.ids, 0), fixed=pad(template.fixed, False),
                           clip_slot=pad(template.clip_slot, -1), memory_slot=pad(template.memory_slot, -1),
                           memory_offset=pad(template.memory_offset, -1), separator_of=pad(template.separator_of, -1),
                           vision_offset=pad(template.vision_offset, -1), layout=layout)


_ARRAYS = ("ids", "fixed", "clip_slot", "memory_slot", "memory_offset", "separator_of", "vision_offset", "layout")
_SHAPE = ("memory_width", "clip_tokens", "clip_grid", "clip_slots")


def _split(template: WindowTemplate) -> tuple[tuple, tuple]:
  """(its static shape: the _SHAPE fields, its arrays: the _ARRAYS fields), as the programs take a template."""
  return tuple(getattr(template, f) for f in _SHAPE), tuple(getattr(template, f) for f in _ARRAYS)


def _joined(shape: tuple, arrays: tuple) -> WindowTemplate:
  """_split's inverse, inside a program (the arrays traced)."""
  return WindowTemplate(**dict(zip(_ARRAYS, arrays)), **dict(zip(_SHAPE, shape)))


# How often each program was traced (a compile-count test reads it).
TRACE_COUNTS: collections.Counter = collections.Counter()


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _windows(graphdef, shape: tuple, params: sampler.SamplingParams, fmt: TokenFormat, state, arrays, features,
             deepstack, first_clip, steps, keys, valid, ring_tokens, ring_lengths):
  """A jitted scan over consecutive windows of B rows, each window prefilled and decoded in full.

  The template is its arrays (traced: `arrays`, the _ARRAYS fields) and its static shape (`shape`, the _SHAPE
  fields), so the program depends on the buffer's length, not on its text.

  features: [B, F, clip_tokens, H] (and DeepStack) for clips first_clip .. first_clip + F - 1 (zeros where a
  stream has no clip); steps: [n] the window's new clip; keys: [n] its RNG key; valid: [n, B] whether row b
  has that window (else its ring is kept and its outputs are zeros; a window no row has is skipped).
  Returns (ring_tokens [B, 4, M], ring_lengths [B, 4], per window: tokens, logprobs [n, B, T], lengths,
  memory_lengths [n, B], memories [n, B, M]).
  """
  TRACE_COUNTS["windows"] += 1
  model = nnx.merge(graphdef, state)
  template = _joined(shape, arrays)
  b, m, t = features.shape[0], template.memory_width, params.max_new_tokens
  window = functools.partial(window_step, model, template, params, fmt, features, deepstack, first_clip)

  def skipped(*_):
    return (jnp.zeros((b, t), jnp.int32), jnp.zeros((b, t), jnp.float32), jnp.zeros((b,), jnp.int32),
            jnp.zeros((b, m), jnp.int32), jnp.zeros((b,), jnp.int32))

  def step(carry, xs):
    ring_tokens, ring_lengths = carry
    k, key, ok = xs
    ys = jax.lax.cond(jnp.any(ok), window, skipped, ring_tokens, ring_lengths, k, key)
    ys = tuple(jnp.where(ok.reshape(-1, *[1] * (y.ndim - 1)), y, 0) for y in ys)
    pushed_tokens, pushed_lengths = push(ring_tokens, ring_lengths, ys[3], ys[4])
    ring_tokens = jnp.where(ok[:, None, None], pushed_tokens, ring_tokens)
    ring_lengths = jnp.where(ok[:, None], pushed_lengths, ring_lengths)
    return (ring_tokens, ring_lengths), ys

  return jax.lax.scan(step, (ring_tokens, ring_lengths), (steps, keys, valid))


def encode_clips(model, clips_pixels, clip_grid) -> tuple[Array, list[Array]]:
  """clips_pixels: [B, n_clips, t*h*w, C*T*P*P] -> features [B, n_clips, clip_tokens, H] and DeepStack
  features of the same shape, in one vision pass (attention never crosses frames, so this equals
  encoding each clip alone)."""
  b, n = clips_pixels.shape[:2]
  pixels = np.asarray(clips_pixels).reshape(b * n * clips_pixels.shape[2], -1)
  features, deepstack = model.vision_features(pixels, np.tile(np.asarray(clip_grid)[None], (b * n, 1)))
  shape = lambda f: f.reshape(b, n, -1, f.shape[-1])
  return shape(features), [shape(d) for d in deepstack]


def window_calls(templates, first_clip: int, end_clip: int, chunk: int) -> list[tuple[WindowTemplate, list[int]]]:
  """How the windows first_clip .. end_clip - 1 are grouped into program calls: (template, its windows' new
  clips). With one template per clip count (build_templates), each of a stream's first 4 windows is a call of
  its own size; then chunks of `chunk` windows of the full template. With a single template, every call is a
  chunk of that template. The last chunk is padded up to `chunk` (valid=False), so one program serves every
  stream length."""
  templates = (templates,) if isinstance(templates, WindowTemplate) else tuple(templates)
  if len(templates) not in (1, CLIP_SLOTS) or templates[-1].clip_slots != CLIP_SLOTS:
    raise ValueError(f"templates: give one full window template or build_templates' {CLIP_SLOTS}, got "
                     f"{[t.clip_slots for t in templates]} clip slots")
  calls, k = [], first_clip
  while k < end_clip:
    if len(templates) > 1 and k < CLIP_SLOTS - 1:
      calls.append((templates[k], [k]))
      k += 1
    else:
      calls.append((templates[-1], list(range(k, k + chunk))))
      k += chunk
  return calls


def rollout(model, templates, features, deepstack, params: sampler.SamplingParams, fmt: TokenFormat,
            seed: int = 0, num_samples: int = 1, mesh=None, preset="fsdp", *, num_clips=None, first_clip: int = 0,
            ring=None, chunk: int = 8, on_chunk=None, clip_offset: int = 0) -> RolloutOutput:
  """Memorises B streams (features [B, n, clip_tokens, H] from encode_clips: clips 0 .. n-1) in jitted scans.

  templates: build_templates' buffers by clip count, or one full template (every window then fills the full
  buffer). num_clips: [B] each stream's length (default n; a shorter stream stops early). first_clip, ring:
  start at window first_clip with ring = (tokens [B, 4, M], lengths [B, 4]), the memories of the 4 clips
  before it (default: none). num_samples > 1 runs that many independent trajectories per stream; row
  b * num_samples + s is sample s of stream b. Window k draws with the key fold_in(key(seed), clip_offset + k)
  (clip_offset: the stream clip that features[:, 0] is), so a sampled rollout does not depend on how it is
  chunked or where it was resumed. on_chunk(clips, RolloutOutput of those clips): called
  as each call's outputs reach the host (the next call is already running), e.g. to save progress.

  Returns the outputs of windows first_clip .. max(num_clips) - 1 (leading axis), rows as above.

  Sharded params: a model whose params are already placed (from_pretrained(..., mesh=)) runs as it is,
  its arrays passed to the jitted scan with their shardings (nothing gathers them to one device); with
  `mesh`, the params are first placed with sharding.param_shardings under `preset`, and the rows (streams x
  samples: features and ring) are split over the preset's batch axes where they divide them.
  """
  features = np.asarray(features)
  deepstack = [np.asarray(d) for d in deepstack]
  b, n = features.shape[:2]
  lengths = np.full(b, n) if num_clips is None else np.asarray(num_clips)
  if lengths.shape != (b,) or (lengths > n).any():
    raise ValueError(f"num_clips: {lengths.tolist()} for features of {b} streams of {n} clips")
  if num_samples > 1:
    features, lengths = np.repeat(features, num_samples, axis=0), np.repeat(lengths, num_samples)
    deepstack = [np.repeat(d, num_samples, axis=0) for d in deepstack]
    ring = None if ring is None else tuple(np.repeat(np.asarray(r), num_samples, axis=0) for r in ring)
  rows = len(lengths)
  calls = window_calls(templates, first_clip, int(lengths.max()), chunk)
  width = calls[0][0].memory_width
  if ring is None:
    ring = (np.zeros((rows, MAX_PREVIOUS, width), np.int32), np.zeros((rows, MAX_PREVIOUS), np.int32))
  ring_tokens, ring_lengths = (jnp.asarray(r, jnp.int32) for r in ring)
  graphdef, state = nnx.split(model)
  put = lambda x, axes: x  # without a mesh, rows stay where they are
  if mesh is not None:
    state = jax.device_put(state, shd.param_shardings(state, mesh, preset))
    # Rows (streams x samples) over the preset's batch axes, where they divide them (sharding.spec_for).
    put = lambda x, axes: jax.device_put(x, shd.activation_sharding(mesh, preset, shape=x.shape, axes=axes))
    ring_tokens, ring_lengths = put(ring_tokens, ("batch", None, None)), put(ring_lengths, ("batch", None))
  base_key = jax.random.key(seed)
  end = int(lengths.max())
  pending, outputs = None, []

  def collect(call):
    steps, ys = call
    keep = [i for i, k in enumerate(steps) if k < end]
    out = RolloutOutput(*(np.asarray(y)[keep] for y in ys))
    outputs.append(out)
    if on_chunk is not None:
      on_chunk([steps[i] for i in keep], out)

  for template, steps in calls:
    slots = template.clip_slots
    lo = max(steps[0] - (slots - 1), 0)
    span = len(steps) + slots - 1  # the clips these windows show, from lo
    rows_axes = ("batch", None, None, None)
    window_features = put(_clip_span(features, lo, span), rows_axes)
    window_deepstack = [put(_clip_span(d, lo, span), rows_axes) for d in deepstack]
    valid = np.asarray(steps)[:, None] < lengths[None, :]
    keys = jax.vmap(lambda k: jax.random.fold_in(base_key, k))(jnp.asarray(steps) + clip_offset)
    shape, arrays = _split(template)
    (ring_tokens, ring_lengths), ys = _windows(graphdef, shape, params, fmt, state, arrays, window_features,
                                               window_deepstack, lo, jnp.asarray(steps), keys, valid, ring_tokens,
                                               ring_lengths)
    if pending is not None:
      collect(pending)
    pending = (steps, ys)
  collect(pending)
  return RolloutOutput(*(np.concatenate(x) for x in zip(*outputs)))


def _clip_span(features: np.ndarray, start: int, count: int) -> np.ndarray:
  """features[:, start:start + count], zero-padded to count clips."""
  part = features[:, start:start + count]
  if part.shape[1] < count:
    part = np.concatenate([part, np.zeros((part.shape[0], count - part.shape[1], *part.shape[2:]), part.dtype)], 1)
  return part


def compact_prompt(template: WindowTemplate, step: int, ring_tokens: np.ndarray, ring_lengths: np.ndarray):
  """One row's prompt with the masked slots removed (the reference's input): (ids [L'], clip of each
  clip slot in use). ring_tokens: [4, M]; ring_lengths: [4]."""
  inputs, clip_of_slot = window_inputs(template, step, jnp.asarray(ring_tokens)[None], jnp.asarray(ring_lengths)[None])
  keep = np.asarray(inputs.attention_mask[0]) > 0
  clips = [int(c) for c in np.asarray(clip_of_slot[0]) if c <= step]
  return np.asarray(inputs.input_ids[0])[keep], clips


def rollout_reference(model, template: WindowTemplate, features, deepstack, params: sampler.SamplingParams,
                      fmt: TokenFormat) -> RolloutOutput:
  """The same rollout as a Python loop over sampling.generate on compact prompts (greedy only: the
  loop draws its random numbers differently from the scan)."""
  if params.temperature != 0:
    raise ValueError("rollout_reference is the greedy reference; use temperature=0")
  b, n_clips = features.shape[:2]
  m = template.memory_width
  ring_tokens, ring_lengths = np.zeros((b, MAX_PREVIOUS, m), np.int32), np.zeros((b, MAX_PREVIOUS), np.int32)
  outputs = []
  for k in range(n_clips):
    step_out = []
    for row in range(b):
      ids, clips = compact_prompt(template, k, ring_tokens[row], ring_lengths[row])
      feats = jnp.concatenate([features[row, c] for c in clips])
      ds = [jnp.concatenate([d[row, c] for c in clips]) for d in deepstack]
      out = sampler.generate(model, {"input_ids": ids[None], "video_grid_thw": [template.clip_grid] * len(clips)},
                             max_new_tokens=params.max_new_tokens, stop_token_ids=params.stop_token_ids,
                             pad_token_id=params.pad_token_id, thinking_budget=params.thinking_budget,
                             think_end_token_id=params.think_end_token_id, memory_budget=params.memory_budget,
                             vision_features=(feats, ds))
      step_out.append(out)
    tokens = np.concatenate([o.tokens for o in step_out])
    memory, length = (np.asarray(x) for x in cut_memory(jnp.asarray(tokens), fmt, m))
    ring_tokens, ring_lengths = (np.asarray(x) for x in push(ring_tokens, ring_lengths, memory, length))
    outputs.append((tokens, np.concatenate([o.logprobs for o in step_out]),
                    np.concatenate([o.lengths for o in step_out]), memory, length))
  return RolloutOutput(*(np.stack(x) for x in zip(*outputs)))
