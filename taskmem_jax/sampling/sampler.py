"""KV-cache generation for Qwen3-VL: a jitted prefill, then a ``lax.while_loop`` decode over a
donated, preallocated cache.

Prompts are left-padded to a length bucket so that repeated calls with similar prompt lengths reuse
one compilation. ``num_samples`` completions share a single prefill per prompt: the cache is
repeated after prefill, so rows come out grouped by prompt (GRPO groups).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taskmem_jax import sharding as shd
from taskmem_jax.models.qwen3_vl.model import ModelInputs, Qwen3VLForConditionalGeneration, prepare_inputs
from taskmem_jax.models.qwen3_vl.text import KVCache

Array = jax.Array
THINK_END_TOKEN_ID = 151668  # "</think>" in the Qwen3 tokenizers

# Incremented while tracing (never when a compiled function is reused): tests count compilations.
TRACE_COUNTS: collections.Counter = collections.Counter()


class GenerateOutput(NamedTuple):
  """tokens: [B*num_samples, max_new_tokens] int32, pad_token_id after a row stops;
  logprobs: [B*num_samples, max_new_tokens] float32, log p(token) under softmax(logits / temperature)
  (temperature 1 when greedy), 0 after the stop; lengths: [B*num_samples] int32, tokens generated
  including the stop token. Rows are grouped by prompt: row b*num_samples + s is sample s of prompt b."""
  tokens: np.ndarray
  logprobs: np.ndarray
  lengths: np.ndarray


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  max_new_tokens: int
  temperature: float = 0.0
  top_k: int | None = None
  top_p: float | None = None
  stop_token_ids: tuple[int, ...] = ()
  pad_token_id: int = 0
  thinking_budget: int | None = None
  think_end_token_id: int = THINK_END_TOKEN_ID
  memory_budget: int | None = None

  def __post_init__(self):
    if self.max_new_tokens <= 0:
      raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be positive")
    if self.temperature < 0:
      raise ValueError(f"temperature={self.temperature}: must be >= 0 (0 is greedy)")
    if self.top_k is not None and self.top_k <= 0:
      raise ValueError(f"top_k={self.top_k}: must be positive or None")
    if self.top_p is not None and not 0 < self.top_p <= 1:
      raise ValueError(f"top_p={self.top_p}: must be in (0, 1] or None")
    if self.thinking_budget is not None and self.thinking_budget < 0:
      raise ValueError(f"thinking_budget={self.thinking_budget}: must be >= 0 or None")
    if self.memory_budget is not None and (self.memory_budget < 1 or not self.stop_token_ids):
      raise ValueError(f"memory_budget={self.memory_budget}: must be >= 1, and needs stop_token_ids to stop with")


def geometric_bucket(length: int, minimum: int = 64) -> int:
  """Smallest of minimum * {1, 1.5, 2, 3, 4, 6, ...} >= length: at most a third is padding."""
  bucket = minimum
  while bucket < length:
    bucket = bucket * 3 // 2 if (bucket & (bucket - 1)) == 0 else bucket * 4 // 3
  return bucket


def _left_pad(input_ids: np.ndarray, attention_mask: np.ndarray, length: int, pad: int):
  extra = length - input_ids.shape[1]
  return (np.pad(input_ids, ((0, 0), (extra, 0)), constant_values=pad),
          np.pad(attention_mask, ((0, 0), (extra, 0)), constant_values=0))


def _warp(logits: Array, params: SamplingParams) -> Array:
  """Temperature, then top-k, then top-p (the order transformers applies them). logits: [B, V] fp32."""
  logits = logits / params.temperature
  if params.top_k is not None and params.top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, params.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if params.top_p is not None and params.top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (at least one token).
    keep = (jnp.cumsum(probs, axis=-1) - probs) < params.top_p
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return logits


def _choose(logits: Array, rng: Array, params: SamplingParams) -> tuple[Array, Array]:
  """logits [B, V] fp32 -> (tokens [B] int32, log-probs [B] under softmax(logits / temperature))."""
  if params.temperature == 0.0:
    tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = logits
  else:
    tokens = jax.random.categorical(rng, _warp(logits, params), axis=-1).astype(jnp.int32)
    scaled = logits / params.temperature
  logprobs = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1), tokens[:, None], axis=-1)[:, 0]
  return tokens, logprobs


def prefill(model: Qwen3VLForConditionalGeneration, inputs: ModelInputs, cache_len: int, num_samples: int = 1,
            features=None, deepstack=None):
  """Runs the prompt through the model, filling a fresh cache of cache_len slots (traceable).

  The prompt's last slot must hold a real token in every row. Vision comes from inputs' pixels, or
  from features / deepstack (encode_vision's outputs) when the inputs carry none.
  Returns (logits at the last prompt position [B*n, V] fp32, caches [B*n, cache_len, Hkv, hd],
  kv_mask [B*n, cache_len], next position [B*n]), each repeated num_samples times per prompt.
  """
  text = model.config.text
  b, length = inputs.input_ids.shape
  shape = (b, cache_len, text.num_key_value_heads, text.head_dim)
  cache = [KVCache(jnp.zeros(shape, model.dtype), jnp.zeros(shape, model.dtype)) for _ in range(text.num_hidden_layers)]
  kv_mask = jnp.concatenate([inputs.attention_mask, jnp.ones((b, cache_len - length), jnp.int32)], axis=1)
  if inputs.pixel_values is not None:
    features, deepstack = model.encode_vision(inputs.pixel_values, inputs.vision_meta)
  hidden, cache = model.hidden_states(inputs, features, deepstack, cache, 0, kv_mask)
  logits = model.logits(hidden[:, -1:])[:, 0].astype(jnp.float32)
  # A token decoded after n real tokens sits at n + rope_delta on all three axes.
  next_position = jnp.sum(inputs.attention_mask, axis=1) + inputs.rope_deltas[:, 0]
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
  return repeat(logits), jax.tree.map(repeat, cache), repeat(kv_mask), repeat(next_position)


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _prefill(graphdef, state, inputs: ModelInputs, cache_len: int, num_samples: int, features=None, deepstack=None):
  TRACE_COUNTS["prefill"] += 1
  return prefill(nnx.merge(graphdef, state), inputs, cache_len, num_samples, features, deepstack)


class DecodeState(NamedTuple):
  """The while_loop carry. step: tokens written so far; logits: [B, V] fp32 for the next token;
  tokens, logprobs: [B, max_new_tokens]; done, thinking (no </think> yet): [B] bool; memory_len: [B]
  tokens since </think>, itself included; cache: per-layer KVCache [B, S, Hkv, hd]; rng: one key for the
  batch, or a key per row [B] (then a row's draws do not depend on the other rows of its batch)."""
  step: Array
  logits: Array
  tokens: Array
  logprobs: Array
  done: Array
  thinking: Array
  memory_len: Array
  cache: list[KVCache]
  rng: Array


def init_decode_state(logits: Array, cache: list[KVCache], params: SamplingParams, rng: Array) -> DecodeState:
  rows = logits.shape[0]
  return DecodeState(jnp.int32(0), logits, jnp.full((rows, params.max_new_tokens), params.pad_token_id, jnp.int32),
                     jnp.zeros((rows, params.max_new_tokens), jnp.float32), jnp.zeros((rows,), bool),
                     jnp.ones((rows,), bool), jnp.zeros((rows,), jnp.int32), cache, rng)


def decode(model: Qwen3VLForConditionalGeneration, carry: DecodeState, kv_mask: Array, next_position: Array,
           start_slot, params: SamplingParams, chunk: int) -> DecodeState:
  """Up to `chunk` decode steps (traceable): choose a token from the current logits, write it, run it
  through the model.

  kv_mask: [B, S]; next_position: [B] position of the first generated token; start_slot: its slot.
  """
  b = carry.logits.shape[0]
  stop_ids = jnp.asarray(params.stop_token_ids or (-1,), jnp.int32)
  last = jnp.minimum(carry.step + chunk, params.max_new_tokens)

  def cond(c: DecodeState):
    return (c.step < last) & ~jnp.all(c.done)

  def body(c: DecodeState) -> DecodeState:
    if c.rng.ndim:  # a key per row
      keys = jax.vmap(jax.random.split)(c.rng)
      rng = keys[:, 0]
      token, logprob = jax.vmap(lambda logits, key: _choose(logits[None], key, params))(c.logits, keys[:, 1])
      token, logprob = token[:, 0], logprob[:, 0]
    else:
      rng, key = jax.random.split(c.rng)
      token, logprob = _choose(c.logits, key, params)
    if params.thinking_budget is not None:
      forced = c.thinking & (c.step >= params.thinking_budget)
      token = jnp.where(forced, params.think_end_token_id, token)
      logprob = jnp.where(forced, 0.0, logprob)  # not the policy's choice
    if params.memory_budget is not None:  # the memory span is full: stop
      forced = ~c.thinking & (c.memory_len >= params.memory_budget)
      token = jnp.where(forced, params.stop_token_ids[0], token)
      logprob = jnp.where(forced, 0.0, logprob)
    thinking = c.thinking & (token != params.think_end_token_id)
    memory_len = jnp.where(thinking, 0, c.memory_len + 1)
    token = jnp.where(c.done, params.pad_token_id, token)
    logprob = jnp.where(c.done, 0.0, logprob)
    position = jnp.broadcast_to((next_position + c.step)[None, :, None], (3, b, 1))
    step_inputs = ModelInputs(token[:, None], None, position, None, jnp.full((b, 1), -1, jnp.int32))
    hidden, cache = model.hidden_states(step_inputs, cache=c.cache, cache_index=start_slot + c.step, kv_mask=kv_mask)
    return DecodeState(c.step + 1, model.logits(hidden)[:, 0].astype(jnp.float32),
                       c.tokens.at[:, c.step].set(token), c.logprobs.at[:, c.step].set(logprob),
                       c.done | jnp.isin(token, stop_ids), thinking, memory_len, cache, rng)

  return jax.lax.while_loop(cond, body, carry)


def response_lengths(tokens, steps, stop_token_ids) -> Array:
  """tokens [B, T] -> [B] int32: up to and including the first stop token, else the steps decoded."""
  stops = jnp.isin(tokens, jnp.asarray(tuple(stop_token_ids) or (-1,), jnp.int32))
  return jnp.where(jnp.any(stops, axis=1), jnp.argmax(stops, axis=1) + 1, steps).astype(jnp.int32)


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7), donate_argnums=(2,))
def _decode(graphdef, state, carry: DecodeState, kv_mask, next_position, start_slot: int, params: SamplingParams,
            chunk: int) -> DecodeState:
  """decode, jitted; the carry (and so the cache) is donated and updated in place."""
  TRACE_COUNTS["decode"] += 1
  return decode(nnx.merge(graphdef, state), carry, kv_mask, next_position, start_slot, params, chunk)


def generate(model: Qwen3VLForConditionalGeneration, inputs: dict, *, max_new_tokens: int,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             num_samples: int = 1, seed: int = 0, stop_token_ids=None, pad_token_id: int = 0,
             thinking_budget: int | None = None, think_end_token_id: int = THINK_END_TOKEN_ID,
             memory_budget: int | None = None, min_bucket: int = 64, decode_chunk: int | None = None,
             on_tokens: Callable[[int], None] | None = None, vision_features=None) -> GenerateOutput:
  """Samples continuations of a batch of prompts.

  inputs: the processor's dict, transformers' names (input_ids [B, L], attention_mask [B, L],
  pixel_values / image_grid_thw, pixel_values_videos / video_grid_thw). temperature 0 is greedy.
  Rows stop at any of stop_token_ids (the stop token is kept). With thinking_budget=N, a row that
  has not closed its thinking after N tokens gets think_end_token_id forced as token N+1 (the prompt
  is assumed to end inside <think>). With memory_budget=M, a row whose span from </think> (included)
  reaches M tokens is stopped with stop_token_ids[0] (the paper's memory budget L_mem).
  decode_chunk: decode this many steps per device call (None: all in one call) and report each
  chunk's step count to on_tokens, e.g. a progress bar's update; the loop also ends early once every
  row has stopped.
  vision_features: (features [n, H], DeepStack features: list of [n, H]) for the batch's vision
  tokens in order (images first, then videos), as model.encode_vision returns them. Then pixel values
  may be left out (grids are still needed): a clip's features can be computed once and reused by
  every window that shows it. Vision attention never crosses frames, so this is exact.
  """
  params = SamplingParams(max_new_tokens, temperature, top_k, top_p, tuple(stop_token_ids or ()), pad_token_id,
                          thinking_budget, think_end_token_id, memory_budget)
  if num_samples <= 0:
    raise ValueError(f"num_samples={num_samples}: must be positive")
  ids = np.asarray(inputs["input_ids"])
  if ids.ndim != 2:
    raise ValueError(f"input_ids: expected shape [B, L], got {ids.shape}")
  mask = np.asarray(inputs.get("attention_mask", np.ones_like(ids))).astype(np.int32)
  if mask.shape != ids.shape:
    raise ValueError(f"attention_mask: shape {mask.shape} does not match input_ids {ids.shape}")
  if not mask[:, -1].all():
    raise ValueError("attention_mask: prompts must be left-padded (every row's last token real)")
  length = geometric_bucket(ids.shape[1], min_bucket)
  ids, mask = _left_pad(ids, mask, length, pad_token_id)
  features, deepstack = None, None
  pixels = (inputs.get("pixel_values"), inputs.get("pixel_values_videos"))
  if vision_features is not None:
    features, deepstack = vision_features
    pixels = (None, None)  # the features stand for them
  prepared = prepare_inputs(model.config, ids, mask, pixels[0], inputs.get("image_grid_thw"), pixels[1],
                            inputs.get("video_grid_thw"), require_pixels=vision_features is None)
  if features is not None:
    needed = int((prepared.vision_index >= 0).sum())
    if features.shape[0] != needed or any(d.shape != features.shape for d in deepstack):
      raise ValueError(f"vision_features: {features.shape[0]} feature rows (DeepStack shapes "
                       f"{[tuple(d.shape) for d in deepstack]}) for {needed} vision tokens in input_ids")
  graphdef, state = nnx.split(model)
  # Cache slots rounded up to a multiple of 64: the Pallas decode kernel's key blocks then tile it exactly
  # (no per-step copy), and nearby budgets share one compilation.
  cache_len = -(-(length + max_new_tokens) // 64) * 64
  logits, cache, kv_mask, next_position = _prefill(graphdef, state, prepared, cache_len, num_samples,
                                                   features, deepstack)
  carry = init_decode_state(logits, cache, params, jax.random.key(seed))
  chunk = max_new_tokens if decode_chunk is None else decode_chunk
  while True:
    before = int(carry.step)
    carry = _decode(graphdef, state, carry, kv_mask, next_position, length, params, chunk)
    step = int(carry.step)
    if on_tokens is not None:
      on_tokens(step - before)
    if step >= max_new_tokens or bool(jnp.all(carry.done)):
      break
  lengths = response_lengths(carry.tokens, step, params.stop_token_ids)
  return GenerateOutput(np.asarray(carry.tokens), np.asarray(carry.logprobs), np.asarray(lengths))
