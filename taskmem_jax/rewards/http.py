"""HTTPJudge: the Phase-One judgements and the Phase-Two task preference from an OpenAI-compatible server.

The official reward asks hosted models (Gemini for the video, GPT-4o for the text and the ranking,
taskmem-spec.md §2.2); this client speaks the protocol most servers share (OpenAI, vLLM, SGLang,
Gemini's OpenAI endpoint): POST {base_url}/chat/completions with {model, messages, temperature}. The
prompts are judge_prompts'; the video goes as a few evenly spaced frames, each a base64 JPEG/PNG
data-URL image_url part after a "Frame at t s:" text part (OpenAI's multimodal message format).

Only the standard library (urllib) is used. Connection errors, timeouts, HTTP 429 and 5xx are retried
up to max_retries times with exponential backoff (honouring a numeric Retry-After); other 4xx are not.
Every failure becomes a failed Verdict / Ranking / Preference whose reason names it: the HTTP status, a
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
import http.client
import io
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image

from taskmem_jax.processing.video import read_video
from taskmem_jax.rewards import judge_prompts as P
from taskmem_jax.rewards.judge import Judge, Ranking, Verdict, WindowContext
from taskmem_jax.rewards.task_judge import Preference, TaskJudge, check_questions

MAX_RETRY_AFTER_S = 30.0  # a server's Retry-After is honoured up to this long


class CallError(Exception):
  """A chat-completions call that gave no usable reply; str(e) is the reason a failed Verdict carries."""


class _Retryable(CallError):
  pass


class HTTPJudge(Judge, TaskJudge):
  """Judges with a hosted model.

  base_url: up to the API version, e.g. "https://api.openai.com/v1" or "http://localhost:8000/v1".
  model: the server's model name. api_key_env: environment variable holding the key for the
  "Authorization: Bearer" header, read once here; None sends no header (local servers).
  timeout_s: per request (connect and each read). max_retries: extra attempts after the first.
  backoff_s: the first retry's wait; it doubles each retry. temperature: sent as is (the official
  judges use 1e-6). max_tokens: sent when given. num_frames: frames shown to the video judge.
  image_format: "jpeg" or "png". max_side: frames larger than this are scaled down (pixels).
  concurrency: requests in flight per group. extra_body: more fields for the request body (model,
  messages and temperature always come from the judge). texts: the prompts' wording (judge_prompts.JudgeTexts).
  """

  name = "http"

  def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", *,
               timeout_s: float = 60.0, max_retries: int = 3, backoff_s: float = 1.0, temperature: float = 0.0,
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
    _check_number("backoff_s", backoff_s)
    _check_number("temperature", temperature)
    for name, value, low in (("max_retries", max_retries, 0), ("num_frames", num_frames, 1),
                             ("max_side", max_side, 1), ("concurrency", concurrency, 1)):
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
      raise ValueError(f"max_tokens={max_tokens!r}: must be a positive integer or None")
    if image_format not in ("jpeg", "png"):
      raise ValueError(f"image_format={image_format!r}: 'jpeg' or 'png'")
    self._api_key = None
    if api_key_env is not None:
      self._api_key = os.environ.get(api_key_env)
      if not self._api_key:
        raise ValueError(f"environment variable {api_key_env} is not set; set it to the API key, or pass "
                         "api_key_env=None for a server that needs no key")
    self.url = base_url.rstrip("/") + "/chat/completions"
    self.model, self.timeout_s, self.max_retries, self.backoff_s = model, float(timeout_s), max_retries, backoff_s
    self.temperature, self.max_tokens, self.num_frames = temperature, max_tokens, num_frames
    self.image_format, self.max_side, self.concurrency = image_format, max_side, concurrency
    self.extra_body = dict(extra_body or {})

  def __repr__(self) -> str:  # never shows the key
    return f"HTTPJudge({self.url!r}, model={self.model!r})"

  # --- the Judge interface ----------------------------------------------------------------------

  def faithfulness(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[Verdict]:
    if not descriptions:
      return []
    try:
      frames = self.frame_parts(ctx)
    except Exception as e:  # an unreadable window fails every verdict of the group, never the caller
      return [Verdict(None, f"video: {type(e).__name__}: {e}")] * len(descriptions)

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
    body = {**self.extra_body, "model": self.model, "messages": messages, "temperature": self.temperature}
    if self.max_tokens is not None:
      body["max_tokens"] = self.max_tokens
    return _reply_text(self._post(json.dumps(body).encode("utf-8")))

  def _post(self, data: bytes) -> bytes:
    """The response body of a 2xx reply, after up to max_retries retries."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if self._api_key:
      headers["Authorization"] = f"Bearer {self._api_key}"
    for attempt in range(self.max_retries + 1):
      request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
      try:
        return _send(request, self.timeout_s)
      except _Retryable as e:
        if attempt == self.max_retries:
          raise CallError(f"{e} (after {attempt + 1} attempts)") from None
        time.sleep(max(self.backoff_s * 2**attempt, getattr(e, "retry_after", 0.0)))
    raise AssertionError("unreachable")

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


def _send(request: urllib.request.Request, timeout_s: float) -> bytes:
  """One attempt; raises _Retryable (connection, timeout, 429, 5xx) or CallError (other statuses)."""
  try:
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
      return response.read()
  except urllib.error.HTTPError as e:
    try:
      detail = _excerpt(e.read())
    except Exception:  # the error body is only for the message
      detail = "(no body)"
    reason = f"HTTP {e.code}: {detail}"
    if e.code == 429 or 500 <= e.code < 600:
      error = _Retryable(reason)
      error.retry_after = _retry_after(e.headers)
      raise error from None
    raise CallError(reason) from None
  except urllib.error.URLError as e:
    if isinstance(e.reason, (TimeoutError, socket.timeout)):
      raise _Retryable(f"timeout after {timeout_s:g} s") from None
    raise _Retryable(f"connection error: {e.reason}") from None
  except (TimeoutError, socket.timeout):
    raise _Retryable(f"timeout after {timeout_s:g} s") from None
  except (ConnectionError, http.client.HTTPException) as e:
    raise _Retryable(f"connection error: {type(e).__name__}: {e}") from None


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


def _retry_after(headers) -> float:
  try:
    return min(max(float(headers.get("Retry-After", 0)), 0.0), MAX_RETRY_AFTER_S)
  except (TypeError, ValueError):  # an HTTP date: fall back to our own backoff
    return 0.0


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
