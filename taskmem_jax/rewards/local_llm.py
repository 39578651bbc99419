"""LocalLLMJudge: the Phase-One judgements and the Phase-Two task preference from a local Qwen3-VL checkpoint.

The prompts are judge_prompts'. A local model is read without parsing, so a judgement fails only when
the model call itself fails:
- a verdict compares the next-token log-probs of PASS_LABEL and FAIL_LABEL right after the prompt
  (one forward pass per batch of the group's descriptions; only the last position's logits are formed);
- a ranking is greedy decoding constrained to the labels not yet written: after "[RANK START] " the
  model picks the most likely remaining label, then the label and ", " are fed back through the KV
  cache, M - 1 choices in all; the last label is forced. The result is always a permutation;
- a task preference (Phase Two, task_judge.TaskJudge; text only) is the argmax of the next-token log-probs
  of the three TASK_LABELS ("0", "1", "-" = tie) after judge_prompts.task_prompt, batched like the verdicts.
With a Thinking chat template (the prompt ends in "<think>\\n") an empty reasoning block is closed
first, "\\n</think>\\n\\n", as Qwen3 does when thinking is switched off, so the answer comes next.

The video judge sees the window once per group: the video item is preprocessed and its vision features
encoded once, then repeated for every description of the batch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taskmem_jax import sharding as shd
from taskmem_jax.memory.prompt import window_video_item
from taskmem_jax.models.qwen3_vl.model import ModelInputs, prepare_inputs
from taskmem_jax.rewards import judge_prompts as P
from taskmem_jax.rewards.judge import Judge, Ranking, Verdict, WindowContext, read_window
from taskmem_jax.rewards.task_judge import Preference, TaskJudge, check_questions
from taskmem_jax.sampling.sampler import geometric_bucket, prefill

THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"


class LocalLLMJudge(Judge, TaskJudge):
  """Judges with a local Qwen3-VL model (Qwen3VLForConditionalGeneration) and its Qwen3VLProcessor.

  thinking: the chat template, as Qwen3VLProcessor takes it (None: the checkpoint's own).
  max_batch: descriptions (or memory pairs) per forward pass. video_kwargs: options added to the video
  item (fps, max_frames, min_pixels, max_pixels, ...; see processing.processor). min_bucket: prompts are
  left-padded to sampler.geometric_bucket(L, min_bucket) so similar prompts share one compilation.
  texts: the prompts' wording (judge_prompts.JudgeTexts).
  """

  name = "local_llm"

  def __init__(self, model, processor, *, thinking: bool | None = None, max_batch: int = 8,
               video_kwargs: dict | None = None, min_bucket: int = 64,
               texts: P.JudgeTexts = P.DEFAULT_TEXTS):
    if not isinstance(texts, P.JudgeTexts):
      raise TypeError(f"texts: expected a judge_prompts.JudgeTexts, got {type(texts).__name__}")
    self.texts = texts
    if not all(hasattr(model, a) for a in ("config", "hidden_states", "logits")):
      raise TypeError(f"model: expected a Qwen3VLForConditionalGeneration, got {type(model).__name__}")
    if not all(hasattr(processor, a) for a in ("tokenizer", "prepare", "render")):
      raise TypeError(f"processor: expected a Qwen3VLProcessor, got {type(processor).__name__}")
    if not isinstance(max_batch, int) or max_batch < 1:
      raise ValueError(f"max_batch={max_batch!r}: must be a positive integer")
    if not isinstance(min_bucket, int) or min_bucket < 1:
      raise ValueError(f"min_bucket={min_bucket!r}: must be a positive integer")
    if video_kwargs is not None and not isinstance(video_kwargs, dict):
      raise TypeError(f"video_kwargs: expected a dict, got {type(video_kwargs).__name__}")
    self.model, self.processor, self.thinking = model, processor, thinking
    self.max_batch, self.min_bucket = max_batch, min_bucket
    self.video_kwargs = dict(video_kwargs or {})
    self.pass_id = self.token_id(P.PASS_LABEL)
    self.fail_id = self.token_id(P.FAIL_LABEL)
    if self.pass_id == self.fail_id:
      raise ValueError(f"labels {P.PASS_LABEL!r} and {P.FAIL_LABEL!r} map to the same token {self.pass_id}")
    # Checked here rather than on first use: a tokenizer without them is a setup error, not a bad batch.
    self.task_ids = [self.token_id(label) for label in P.TASK_LABELS]
    if len(set(self.task_ids)) != len(self.task_ids):
      raise ValueError(f"task labels {P.TASK_LABELS} map to tokens {self.task_ids}; they must be distinct")
    probe = processor.render([{"role": "user", "content": "x"}], thinking=thinking)
    self.answer_prefix = self._encode(THINK_CLOSE) if probe.endswith(THINK_OPEN) else []
    self.rank_prefix = self.answer_prefix + self._encode(P.RANK_START + " ")
    self.separator = self._encode(P.RANK_SEPARATOR)

  # --- the Judge interface ----------------------------------------------------------------------

  def faithfulness(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[Verdict]:
    if not descriptions:
      return []
    video, failed = read_window(lambda: self.video_item(ctx), descriptions)
    if failed is not None:
      return failed
    return self._verdicts(lambda d: self.faithfulness_messages(ctx, d, video), descriptions, video)

  def non_redundancy(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[Verdict]:
    return self._verdicts(lambda d: self.non_redundancy_messages(ctx, d), descriptions, None)

  def rank(self, ctx: WindowContext, descriptions: Sequence[str]) -> Ranking:
    m = len(descriptions)
    if m <= 1:
      return Ranking(tuple(range(m)), "nothing to compare")
    try:
      labels = [self.token_id(label) for label in P.rank_labels(m)]
      ids, mask = self._batch([self.ranking_messages(ctx, descriptions)], self.rank_prefix)
      return Ranking(self._constrained_rank(ids, mask, labels), "constrained greedy decoding")
    except Exception as e:
      return Ranking(None, _describe(e))

  # --- the TaskJudge interface (Phase Two) -------------------------------------------------------

  def prefer(self, questions: Sequence[str], first: str, second: str) -> Preference:
    return self.prefer_many(questions, [(first, second)])[0]

  def prefer_many(self, questions: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[Preference]:
    """One preference per ordered pair (shown as {"0": first, "1": second}), max_batch pairs per forward.

    Bad questions are the caller's mistake and raise (check_questions); anything that goes wrong in a
    batch (a pair that is not two strings, the model call) fails only that batch's preferences."""
    questions = check_questions(questions)
    pairs = list(pairs)
    preferences = []
    for i in range(0, len(pairs), self.max_batch):
      chunk = pairs[i:i + self.max_batch]
      try:
        scores = self._label_logprobs([self.task_messages(questions, a, b) for a, b in chunk], None, None,
                                      self.task_ids)
      except Exception as e:
        preferences += [Preference(None, _describe(e))] * len(chunk)
        continue
      preferences += [_preference(row) for row in scores]
    return preferences

  # --- prompts (public so tests and tools can render exactly what the judge sees) -----------------

  def video_item(self, ctx: WindowContext) -> dict[str, Any]:
    """The window as a preprocessed video item (read and resized once per group)."""
    if ctx.video is not None:
      item = {"type": "video", "video": ctx.video}
    elif ctx.video_path:
      item = window_video_item(ctx.video_path, ctx.start, ctx.end)
    else:
      raise ValueError("the context has neither video frames (ctx.video) nor a video_path")
    vision = self.processor.prepare({**item, **self.video_kwargs})
    return {"type": "video", "pixel_values": vision.pixel_values, "grid_thw": vision.grid_thw,
            "timestamps": vision.timestamps}

  def faithfulness_messages(self, ctx: WindowContext, description: str, video: dict) -> list[dict]:
    before, after = P.faithfulness_prompt(ctx.previous, description, self.texts)
    return [{"role": "user", "content": [{"type": "text", "text": before}, video, {"type": "text", "text": after}]}]

  def non_redundancy_messages(self, ctx: WindowContext, description: str) -> list[dict]:
    return [{"role": "user", "content": P.non_redundancy_prompt(ctx.previous, description, self.texts)}]

  def ranking_messages(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[dict]:
    return [{"role": "user", "content": P.ranking_prompt(descriptions, self.texts)}]

  def task_messages(self, questions: Sequence[str], first: str, second: str) -> list[dict]:
    return [{"role": "user", "content": P.task_prompt(questions, first, second, reply="label", texts=self.texts)}]

  def token_id(self, text: str) -> int:
    """The id of text, which must be exactly one token of this tokenizer (ValueError otherwise)."""
    ids = self._encode(text)
    if len(ids) != 1:
      raise ValueError(f"label {text!r} is {len(ids)} tokens {ids} for this tokenizer; judge labels must be "
                       "single tokens")
    return ids[0]

  # --- internals ----------------------------------------------------------------------------------

  def _encode(self, text: str) -> list[int]:
    return list(self.processor.tokenizer.encode(text, add_special_tokens=False))

  def _verdicts(self, messages: Callable[[str], list[dict]], descriptions: Sequence[str],
                video: dict | None) -> list[Verdict]:
    """One verdict per description; a failing batch fails only its own rows."""
    try:
      features = self._vision_features(video)  # once per group: every row shows the same window
    except Exception as e:
      return [Verdict(None, f"video: {_describe(e)}")] * len(descriptions)
    verdicts = []
    for i in range(0, len(descriptions), self.max_batch):
      chunk = descriptions[i:i + self.max_batch]
      try:
        scores = self._label_logprobs([messages(d) for d in chunk], video, features)
      except Exception as e:
        verdicts += [Verdict(None, _describe(e))] * len(chunk)
        continue
      verdicts += [_verdict(yes, no) for yes, no in scores]
    return verdicts

  def _vision_features(self, video: dict | None):
    """(features [n, H], DeepStack: list of [n, H]) of the window, or None without video."""
    if video is None:
      return None
    return self.model.vision_features(video["pixel_values"], np.asarray(video["grid_thw"])[None])

  def _label_logprobs(self, conversations: list[list[dict]], video: dict | None, features,
                      label_ids: Sequence[int] | None = None) -> np.ndarray:
    """One batch: [B, k] log-probs of the label tokens (default: PASS_LABEL, FAIL_LABEL)."""
    label_ids = [self.pass_id, self.fail_id] if label_ids is None else list(label_ids)
    ids, mask = self._batch(conversations, self.answer_prefix)
    logp = jax.nn.log_softmax(self._last_logits(ids, mask, video, features), axis=-1)
    return np.asarray(logp[:, jnp.array(label_ids)])

  def _batch(self, conversations: list[list[dict]], suffix: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Processor batch + suffix tokens on every row -> input_ids, attention_mask [B, bucket], left-padded.

    Appending after left padding keeps every row's last token real, and the same suffix on every row
    keeps them aligned."""
    batch = self.processor(conversations, thinking=self.thinking)
    b = batch["input_ids"].shape[0]
    ids = np.concatenate([batch["input_ids"], np.tile(np.asarray(suffix, np.int32), (b, 1))], axis=1)
    mask = np.concatenate([batch["attention_mask"], np.ones((b, len(suffix)), np.int32)], axis=1)
    extra = geometric_bucket(ids.shape[1], self.min_bucket) - ids.shape[1]
    pad = self.processor.pad_token_id
    return (np.pad(ids, ((0, 0), (extra, 0)), constant_values=pad).astype(np.int32),
            np.pad(mask, ((0, 0), (extra, 0))).astype(np.int32))

  def _last_logits(self, ids, mask, video, features) -> jax.Array:
    """[B, V] fp32 logits at the last position; video features (one window's) repeated per row."""
    b = ids.shape[0]
    grids = None if video is None else np.tile(np.asarray(video["grid_thw"], np.int64)[None], (b, 1))
    inputs = prepare_inputs(self.model.config, ids, mask, video_grid_thw=grids, require_pixels=False)
    feats, deepstack = None, None
    if features is not None:
      feats = jnp.tile(features[0], (b, 1))
      deepstack = [jnp.tile(d, (b, 1)) for d in features[1]]
    graphdef, state = nnx.split(self.model)
    return _last_logits(graphdef, state, inputs, feats, deepstack)

  def _constrained_rank(self, ids: np.ndarray, mask: np.ndarray, labels: list[int]) -> tuple[int, ...]:
    """Greedy over the remaining labels; each choice and the separator go through the KV cache."""
    m, chunk = len(labels), 1 + len(self.separator)
    bucket = ids.shape[1]
    inputs = prepare_inputs(self.model.config, ids, mask)
    graphdef, state = nnx.split(self.model)
    logits, cache, kv_mask, position = _prefill(graphdef, state, inputs, bucket + (m - 2) * chunk)
    remaining, order, offset = list(range(m)), [], 0
    while len(remaining) > 1:
      logp = np.asarray(jax.nn.log_softmax(logits[0]))
      best = max(remaining, key=lambda i: logp[labels[i]])  # ties: the lowest index
      order.append(best)
      remaining.remove(best)
      if len(remaining) > 1:
        tokens = jnp.asarray([[labels[best]] + self.separator], jnp.int32)
        logits, cache = _feed(graphdef, state, cache, kv_mask, tokens, position + offset, jnp.int32(bucket + offset))
        offset += chunk
    return tuple(order + remaining)


def _verdict(yes: float, no: float) -> Verdict:
  text = f"log p({P.PASS_LABEL})={yes:.4f}, log p({P.FAIL_LABEL})={no:.4f}"
  if not (np.isfinite(yes) and np.isfinite(no)):
    return Verdict(None, "non-finite label log-probs: " + text)
  return Verdict(bool(yes > no), text)  # a tie (not seen in practice) does not pass


def _preference(logp: np.ndarray) -> Preference:
  """The winner among TASK_LABELS (their log-probs, in that order); exact ties go to the first label."""
  text = ", ".join(f"log p({label})={x:.4f}" for label, x in zip(P.TASK_LABELS, logp))
  if not np.all(np.isfinite(logp)):
    return Preference(None, "non-finite label log-probs: " + text)
  return Preference(P.TASK_WINNERS[int(np.argmax(logp))], text)


def _describe(e: Exception) -> str:
  return f"{type(e).__name__}: {e}"


@functools.partial(jax.jit, static_argnums=0)
def _last_logits(graphdef, state, inputs: ModelInputs, features, deepstack) -> jax.Array:
  model = nnx.merge(graphdef, state)
  hidden = model.hidden_states(inputs, features, deepstack)
  return model.logits(hidden[:, -1:])[:, 0].astype(jnp.float32)


@shd.in_mesh_of_args
@functools.partial(jax.jit, static_argnums=(0, 3))
def _prefill(graphdef, state, inputs: ModelInputs, cache_len: int):
  return prefill(nnx.merge(graphdef, state), inputs, cache_len)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _feed(graphdef, state, cache, kv_mask, tokens, position, cache_index):
  """tokens [1, k] at slots cache_index.., positions position + 0..k-1 on all three MRoPE axes (text after
  the prompt, as sampler.decode places it) -> (logits after the last one [1, V] fp32, the cache)."""
  model = nnx.merge(graphdef, state)
  b, k = tokens.shape
  positions = jnp.broadcast_to((position[:, None] + jnp.arange(k))[None], (3, b, k))
  step = ModelInputs(tokens, None, positions, None, jnp.full((b, k), -1, jnp.int32))
  hidden, cache = model.hidden_states(step, cache=cache, cache_index=cache_index, kv_mask=kv_mask)
  return model.logits(hidden[:, -1:])[:, 0].astype(jnp.float32), cache
