"""Answerers and graders for the streaming benchmarks: memory string in, answer out (video never shown).

Multiple choice (VideoMME, EgoLife, SynthWorld): the eval/answer_prompt.py prompt (lettered options plus a
"the memory does not say" option = abstain), answered by a local Qwen3-VL checkpoint (ModelAnswerer) or
an OpenAI-compatible endpoint (ChatAnswerer), optionally with several samples and a majority vote
(EgoLife's protocol: 3 samples). Free form (EgoTempo): the answerer writes an answer or "Insufficient
Information" (an abstention); a grader then says correct / incorrect with a 0-5 score (the paper's
Video-ChatGPT-style judge), or, for fixtures and SynthWorld, a normalised exact match.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Callable, Sequence

from taskmem_jax.eval.answer_prompt import (DEFAULT_TEXTS, INSUFFICIENT, AnswererTexts, free_form_prompt,
                                            parse_letter, qa_prompt)
from taskmem_jax.memory.store import EpisodicMemory
from taskmem_jax.processing.processor import Qwen3VLProcessor
from taskmem_jax.sampling import generate

GRADE_PROMPT = """You grade an answer to a question about a video against the reference answer.
Question: {question}
Reference answer: {reference}
Predicted answer: {prediction}
Judge whether the prediction means the same as the reference (synonyms and paraphrases count).
Reply with JSON only: {{"pred": "correct" or "incorrect", "score": an integer from 0 to 5, "reason": "..."}}"""


def majority(letters: Sequence[str | None]) -> str | None:
  """The most common answer among the samples (abstentions count as an answer, None); ties go to the first
  option in A..E order, the abstention last (the official vote: a dict over "A".."E", E the abstention,
  max by count)."""
  counts = collections.Counter(letters)
  best = max(counts.values())
  return min((x for x in counts if counts[x] == best), key=lambda x: (x is None, x or ""))


class ModelAnswerer:
  """answer(question_text, options, memory) -> letter or None, with greedy decoding."""

  def __init__(self, model, processor: Qwen3VLProcessor, *, max_new_tokens: int = 64, thinking: bool | None = None,
               texts: AnswererTexts = DEFAULT_TEXTS):
    self.model, self.processor, self.texts = model, processor, texts
    self.max_new_tokens, self.thinking = max_new_tokens, thinking
    self.stop_ids = processor.stop_token_ids

  def __call__(self, question: str, options: Sequence[str], memory: EpisodicMemory) -> str | None:
    text, _ = qa_prompt(memory.to_string(), question, options, texts=self.texts)
    batch = self.processor([{"role": "user", "content": text}], thinking=self.thinking)
    out = generate(self.model, batch, max_new_tokens=self.max_new_tokens, stop_token_ids=self.stop_ids,
                   pad_token_id=self.processor.pad_token_id)
    reply = self.processor.tokenizer.decode(out.tokens[0, :out.lengths[0]].tolist(), skip_special_tokens=False)
    return parse_letter(reply, len(options))


class LocalChat:
  """complete(messages) -> text from a local Qwen3-VL checkpoint, so the Chat* answerers and graders run on
  a local model too. temperature 0 is greedy; otherwise each call samples with a new seed."""

  def __init__(self, model, processor, *, max_new_tokens: int = 512, temperature: float = 0.0, top_p: float = 0.95,
               top_k: int = 20, thinking: bool | None = None, seed: int = 0):
    self.model, self.processor = model, processor
    self.max_new_tokens, self.temperature, self.top_p, self.top_k = max_new_tokens, temperature, top_p, top_k
    self.thinking, self.calls, self.seed = thinking, 0, seed

  def __call__(self, messages: list[dict]) -> str:
    batch = self.processor([messages], thinking=self.thinking)
    sampled = self.temperature > 0
    out = generate(self.model, batch, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                   top_k=self.top_k if sampled else None, top_p=self.top_p if sampled else None,
                   seed=self.seed + self.calls, stop_token_ids=self.processor.stop_token_ids,
                   pad_token_id=self.processor.pad_token_id)
    self.calls += 1
    return self.processor.tokenizer.decode(out.tokens[0, :out.lengths[0]].tolist(), skip_special_tokens=True)


class ChatAnswerer:
  """Multiple choice through a chat function complete(messages) -> text (e.g. rewards.HTTPJudge.complete)."""

  def __init__(self, complete: Callable[[list[dict]], str], *, num_samples: int = 1,
               texts: AnswererTexts = DEFAULT_TEXTS):
    self.complete, self.num_samples, self.texts = complete, num_samples, texts

  def __call__(self, question, memory: EpisodicMemory) -> str | None:
    """question: a benchmarks.Question (text, options)."""
    text, _ = qa_prompt(memory.to_string(), question.text, question.options, texts=self.texts)
    messages = [{"role": "user", "content": text}]
    return majority([parse_letter(self.complete(messages), len(question.options)) for _ in range(self.num_samples)])


class ChatFreeFormAnswerer:
  """Free-form answers through a chat function; returns the answer text, or None for an abstention."""

  def __init__(self, complete: Callable[[list[dict]], str], *, texts: AnswererTexts = DEFAULT_TEXTS):
    self.complete, self.texts = complete, texts

  def __call__(self, question, memory: EpisodicMemory) -> str | None:
    """question: a benchmarks.Question (its text)."""
    reply = self.complete([{"role": "user", "content": free_form_prompt(memory.to_string(), question.text,
                                                                         self.texts)}])
    return parse_free_form(reply)


def parse_free_form(reply: str) -> str | None:
  """The answer after any </think>, stripped; None when it says the information is insufficient."""
  answer = reply.rsplit("</think>", 1)[-1].strip()
  if not answer or INSUFFICIENT.lower() in answer.lower():
    return None
  return answer


def parse_grade(reply: str) -> tuple[bool, float]:
  """(correct, score) from the grader's JSON reply (the last object with "pred"); ValueError if none."""
  text = reply.rsplit("</think>", 1)[-1]
  for match in reversed(list(re.finditer(r"\{[^{}]*\}", text, re.DOTALL))):
    try:
      value = json.loads(match.group(0))
    except ValueError:
      continue
    if isinstance(value, dict) and str(value.get("pred", "")).lower() in ("correct", "incorrect"):
      score = float(value.get("score", 0))
      return value["pred"].lower() == "correct", score
  raise ValueError(f"grader reply has no JSON object with pred correct/incorrect: {text[:200]!r}")


class ChatGrader:
  """grade(question, reference, prediction) -> (correct, score) through a chat function."""

  def __init__(self, complete: Callable[[list[dict]], str]):
    self.complete = complete

  def __call__(self, question: str, reference: str, prediction: str) -> tuple[bool, float]:
    return parse_grade(self.complete([{"role": "user", "content": GRADE_PROMPT.format(
        question=question, reference=reference, prediction=prediction)}]))


def _normalise(text: str) -> str:
  return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


class ExactGrader:
  """Correct iff the normalised prediction equals the normalised reference (score 5 or 0)."""

  def __call__(self, question: str, reference: str, prediction: str) -> tuple[bool, float]:
    ok = _normalise(prediction) == _normalise(reference)
    return ok, 5.0 if ok else 0.0
