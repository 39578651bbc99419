"""HTTPJudge: the Phase-One judgements and the Phase-Two task preference from an OpenAI-compatible server.

The official reward asks hosted models (Gemini for the video, GPT-4o for the text and the ranking,
taskmem-spec.md §2.2); this client speaks the protocol most servers share (OpenAI, vLLM, SGLang,
Gemini's OpenAI endpoint): POST {base_url}/chat/completions with {model, messages, temperature}. The
prompts are judge_prompts'; the video goes as a few evenly spaced frames, each a base64 JPEG/PNG
data-URL image_url part after a "Frame at t s:" text part (OpenAI's multimodal message format).

The transport is the `openai` client (the standard client of OpenAI-compatible servers): it sends the
request, and retries connection errors, timeouts, HTTP 408, 409, 429 and 5xx up to max_retries times with
exponential backoff, honouring Retry-After; other 4xx are not retried. The reply is read raw and checked
here, so that every failure becomes a failed Verdict / Ranking / Preference whose reason names it: the HTTP status, a
timeout, malformed JSON, no choices, a refusal, or a reply that is not 0/1 (a preference: no JSON object
with more_useful, or more_useful not 0, 1 or -1). A group's descriptions are sent concurrently (a small
thread pool); results keep the descriptions' order.

The task preference (task_judge.TaskJudge, taskmem-spec.md §3.2; GPT-4o at temperature 1e-6 officially)
is one text-only call per ordered pair with judge_prompts.task_prompt; the reply is
{"more_useful": 0 | 1 | -1, "rationale": ...}, and the rationale becomes the Preference's reason. The pairs
of one prefer_many call go through the same thread pool and keep their order.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import os
import urllib.parse
from typing import Any, Callable, Sequence

import numpy as np
import openai
import PIL.Image

from taskmem_jax.processing.video import read_video
from taskmem_jax.rewards import judge_prompts as P
from taskmem_jax.rewards.judge import Judge, Ranking, Verdict, WindowContext, read_window
from taskmem_jax.rewards.task_judge import Preference, TaskJudge, check_questions

class CallError(Exception):
  """A chat-completions call that gave no usable reply; str(e) is the reason a failed Verdict carries."""


class HTTPJudge(Judge, TaskJudge):
  """Judges with a hosted model.

  base_url: up to the API version, e.g. "https://api.openai.com/v1" or "http://localhost:8000/v1".
  model: the server's model name. api_key_env: environment variable holding the key for the
  "Authorization: Bearer" header, read once here; None sends no header (local servers).
  timeout_s: per request. max_retries: extra attempts after the first (the client's backoff: 0.5 s,
  doubling, or the server's Retry-After). temperature: sent as is (the official judges use 1e-6). max_tokens: sent when given. num_frames: frames shown to the video judge.
  image_format: "jpeg" or "png". max_side: frames larger than this are scaled down (pixels).
  concurrency: requests in flight per group. extra_body: more fields for the request body (model,
  messages, temperature and max_tokens come from the judge's own arguments). texts: the prompts' wording (judge_prompts.JudgeTexts).
  """

  name = "http"

  def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", *,
               timeout_s: float = 60.0, max_retries: int = 3, temperature: float = 0.0,
               max_tokens: int | None = None, num_frames: int = 8, image_format: str = "jpeg",
               max_side: int = 512, concurrency: int = 4, extra_body: dict | None = None,
               texts: P.JudgeTexts = P.DEFAULT_TEXTS):
    if not isinstance(texts, P.JudgeTexts):
      raise TypeError(f"texts: expected a judge_prompts.JudgeTexts, got {type(texts).__name__}")
    self.texts = texts
    parsed = urllib.parse.urlparse(base_url if isinstance(base_url, str) else "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
      raise ValueError(f"base_url={base_url!r}: expected an http(s) URL such as 'http://localhost:8000/v1'")
    if not isinstance(model, str) or not model:
      raise ValueError(f"model={model!r}: expected the server's model name")
    _check_number("timeout_s", timeout_s, positive=True)
    _check_number("temperature", temperature)
    for name, value, low in (("max_retries", max_retries, 0), ("num_frames", num_frames, 1),
                             ("max_side", max_side, 1), ("concurrency", concurrency, 1)):
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
      raise ValueError(f"max_tokens={max_tokens!r}: must be a positive integer or None")
    if image_format not in ("jpeg", "png"):
      raise ValueError(f"image_format={image_format!r}: 'jpeg' or 'png'")
    clash = sorted(set(extra_body or {}) & {"model", "messages", "temperature", "max_tokens"})
    if clash:
      raise ValueError(f"extra_body sets {clash}: pass them as HTTPJudge's own arguments")
    self._api_key = None
    if api_key_env is not None:
      self._api_key = os.environ.get(api_key_env)
      if not self._api_key:
        raise ValueError(f"environment variable {api_key_env} is not set; set it to the API key, or pass "
                         "api_key_env=None for a server that needs no key")
    self.url = base_url.rstrip("/") + "/chat/completions"
    self.model, self.timeout_s, self.max_retries = model, float(timeout_s), max_retries
    # A local server without a key: the client needs some key, and each request omits the header.
    self._client = openai.OpenAI(base_url=base_url.rstrip("/"), api_key=self._api_key or "unused",
                                 timeout=self.timeout_s, max_retries=max_retries)
    self.temperature, self.max_tokens, self.num_frames = temperature, max_tokens, num_frames
    self.image_format, self.max_side, self.concurrency = image_format, max_side, concurrency
    self.extra_body = dict(extra_body or {})

  def __repr__(self) -> str:  # never shows the key
    return f"HTTPJudge({self.url!r}, model={self.model!r})"

  # --- the Judge interface ----------------------------------------------------------------------

  def faithfulness(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[Verdict]:
    if not descriptions:
      return []
    frames, failed = read_window(lambda: self.frame_parts(ctx), descriptions)
    if failed is not None:
      return failed

    def messages(description):
      before, after = P.faithfulness_prompt(ctx.previous, description, self.texts)
      return [{"role": "user", "content": [{"type": "text", "text": before}, *frames,
                                           {"type": "text", "text": after}]}]

    return self._map(messages, descriptions)

  def non_redundancy(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[Verdict]:
    return self._map(lambda d: [{"role": "user", "content": P.non_redundancy_prompt(ctx.previous, d, self.texts)}],
                     descriptions)

  def rank(self, ctx: WindowContext, descriptions: Sequence[str]) -> Ranking:
    m = len(descriptions)
    if m <= 1:
      return Ranking(tuple(range(m)), "nothing to compare")
    try:
      prompt = P.ranking_prompt(descriptions, self.texts)
      return P.parse_ranking(self.complete([{"role": "user", "content": prompt}]), m)
    except Exception as e:
      return Ranking(None, _reason(e))

  # --- the TaskJudge interface (Phase Two) -------------------------------------------------------

  def prefer(self, questions: Sequence[str], first: str, second: str) -> Preference:
    return self.prefer_many(questions, [(first, second)])[0]

  def prefer_many(self, questions: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[Preference]:
    """One call per ordered pair (shown as {"0": first, "1": second}), concurrently, in the pairs' order.
    Bad questions raise (check_questions: the caller's mistake); everything else fails one preference."""
    questions = check_questions(questions)
    messages = lambda pair: [{"role": "user",
                              "content": P.task_prompt(questions, *pair, reply="json", texts=self.texts)}]
    return self._pool(lambda pair: self.preference(lambda: messages(pair)), list(pairs))

  # --- one call -------------------------------------------------------------------------------------

  def verdict(self, messages: list[dict] | Callable[[], list[dict]]) -> Verdict:
    """One verdict call; messages may be a function that builds them (its errors fail the verdict too)."""
    try:
      return P.parse_verdict(self.complete(messages() if callable(messages) else messages))
    except Exception as e:
      return Verdict(None, _reason(e))

  def preference(self, messages: list[dict] | Callable[[], list[dict]]) -> Preference:
    """One task-preference call; messages may be a function that builds them (its errors fail it too)."""
    try:
      return P.parse_preference(self.complete(messages() if callable(messages) else messages))
    except Exception as e:
      return Preference(None, _reason(e))

  def complete(self, messages: list[dict]) -> str:
    """The reply's text; raises CallError naming what went wrong."""
    request = {"model": self.model, "messages": messages, "temperature": self.temperature,
               "extra_body": self.extra_body or None}
    if self.max_tokens is not None:
      request["max_tokens"] = self.max_tokens
    if not self._api_key:
      request["extra_headers"] = {"Authorization": openai.Omit()}
    attempts = f" (after {self.max_retries + 1} attempts)"
    try:
      raw = self._client.chat.completions.with_raw_response.create(**request)
    except openai.APITimeoutError:  # before APIConnectionError, its base class
      raise CallError(f"timeout after {self.timeout_s:g} s{attempts}") from None
    except openai.APIConnectionError as e:
      cause = e.__cause__ or e
      raise CallError(f"connection error: {type(cause).__name__}: {cause}{attempts}") from None
    except openai.APIStatusError as e:
      retried = e.status_code in (408, 409, 429) or e.status_code >= 500
      raise CallError(f"HTTP {e.status_code}: {_excerpt(e.response.content)}{attempts if retried else ''}") from None
    return _reply_text(raw.http_response.content)

  # --- video ----------------------------------------------------------------------------------------

  def frame_parts(self, ctx: WindowContext) -> list[dict[str, Any]]:
    """num_frames evenly spaced frames of the window as [text "Frame at t s:", image_url] part pairs."""
    clip = ctx.video
    if clip is None:
      if not ctx.video_path:
        raise ValueError("the context has neither video frames (ctx.video) nor a video_path")
      clip = read_video(ctx.video_path, start=ctx.start, end=ctx.end)
    frames = np.asarray(clip.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
      raise ValueError(f"video frames: expected uint8 [T, H, W, 3], got shape {frames.shape}")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(self.num_frames, len(frames))).round().astype(int))
    seconds = (np.asarray(clip.frame_indices) - clip.first_frame) / clip.source_fps
    parts = []
    for i in picks:
      parts.append({"type": "text", "text": f"Frame at {seconds[i]:.1f} s:"})
      parts.append({"type": "image_url", "image_url": {"url": self.data_url(frames[i])}})
    return parts

  def data_url(self, frame: np.ndarray) -> str:
    """uint8 [H, W, 3] -> "data:image/jpeg;base64,..." (or png), scaled so neither side exceeds max_side."""
    image = PIL.Image.fromarray(np.asarray(frame, np.uint8))
    image.thumbnail((self.max_side, self.max_side), PIL.Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format=self.image_format.upper(), **({"quality": 90} if self.image_format == "jpeg" else {}))
    return f"data:image/{self.image_format};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

  def _map(self, messages: Callable[[str], list[dict]], descriptions: Sequence[str]) -> list[Verdict]:
    """One verdict per description, concurrently, in the descriptions' order."""
    return self._pool(lambda d: self.verdict(lambda: messages(d)), descriptions)

  def _pool(self, call: Callable[[Any], Any], items: Sequence) -> list:
    """call(item) for every item, up to `concurrency` at a time, in the items' order (call never raises)."""
    if len(items) <= 1 or self.concurrency == 1:
      return [call(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(min(self.concurrency, len(items))) as pool:
      return list(pool.map(call, items))


def _reply_text(body: bytes) -> str:
  """A chat-completions response body -> the first choice's text; CallError when there is none."""
  try:
    reply = json.loads(body)
  except ValueError:
    raise CallError(f"malformed JSON in reply: {_excerpt(body)}") from None
  choices = reply.get("choices") if isinstance(reply, dict) else None
  if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
    raise CallError(f"reply has no choices: {_excerpt(body)}")
  message = choices[0].get("message")
  if not isinstance(message, dict):
    raise CallError(f"first choice has no message: {_excerpt(body)}")
  if message.get("refusal"):
    raise CallError(f"refusal: {_excerpt(message['refusal'])}")
  if choices[0].get("finish_reason") == "content_filter":
    raise CallError("refused: finish_reason content_filter")
  content = message.get("content")
  if isinstance(content, list):  # some servers return content parts
    content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
  if not isinstance(content, str) or not content.strip():
    raise CallError(f"reply has empty content (finish_reason {choices[0].get('finish_reason')!r})")
  return content


def _check_number(name: str, value, positive: bool = False) -> None:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
  if not ok or value < 0 or (positive and value == 0):
    raise ValueError(f"{name}={value!r}: must be a {'positive' if positive else 'non-negative'} number")


def _reason(e: Exception) -> str:
  return str(e) if isinstance(e, CallError) else f"{type(e).__name__}: {e}"


def _excerpt(data, limit: int = 200) -> str:
  if isinstance(data, bytes):
    data = data.decode("utf-8", errors="replace")
  data = str(data).strip()
  return repr(data if len(data) <= limit else data[:limit] + "...")
