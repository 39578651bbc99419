"""An answerer driven by a Qwen3-VL checkpoint: the memory string and one question in, a letter or an
abstention out. The video is never shown: answers come from memory only, as in the paper's protocol.

The prompt (our words) gives the serialised episodic memory (EpisodicMemory.to_string), the question and
its lettered options, and an extra option for "the memory does not say"; choosing it is an abstention.
"""

from __future__ import annotations

import re
from typing import Sequence

from taskmem_jax.memory.store import EpisodicMemory
from taskmem_jax.processing.processor import Qwen3VLProcessor
from taskmem_jax.sampling import generate

ABSTAIN_TEXT = "The memory does not contain the answer."
INSTRUCTION = ("Answer the question using only the memory above. Reply with the letter of one option. If the "
               "memory does not contain the answer, reply with the letter of the last option.")


def qa_prompt(memory_text: str, question: str, options: Sequence[str], letters: str = "ABCDEFGH") -> tuple[str, str]:
  """(the user message, the abstain letter). options: the answer texts, in letter order."""
  if not 2 <= len(options) < len(letters):
    raise ValueError(f"options: {len(options)} given; need 2 to {len(letters) - 1}")
  abstain = letters[len(options)]
  lines = [f"{letters[i]}. {text}" for i, text in enumerate(options)] + [f"{abstain}. {ABSTAIN_TEXT}"]
  return f"{memory_text}\n\nQuestion: {question}\n" + "\n".join(lines) + f"\n\n{INSTRUCTION}", abstain


def parse_letter(reply: str, num_options: int, letters: str = "ABCDEFGH") -> str | None:
  """The first standalone option letter after any </think>; None for the abstain letter or no letter."""
  text = reply.rsplit("</think>", 1)[-1]
  match = re.search(rf"\b([{letters[:num_options + 1]}])\b", text)
  if match is None or match.group(1) == letters[num_options]:
    return None
  return match.group(1)


class ModelAnswerer:
  """answer(question_text, options, memory) -> letter or None, with greedy decoding."""

  def __init__(self, model, processor: Qwen3VLProcessor, *, max_new_tokens: int = 64, thinking: bool | None = None):
    self.model, self.processor = model, processor
    self.max_new_tokens, self.thinking = max_new_tokens, thinking
    self.stop_ids = processor.stop_token_ids

  def __call__(self, question: str, options: Sequence[str], memory: EpisodicMemory) -> str | None:
    text, _ = qa_prompt(memory.to_string(), question, options)
    batch = self.processor([{"role": "user", "content": text}], thinking=self.thinking)
    out = generate(self.model, batch, max_new_tokens=self.max_new_tokens, stop_token_ids=self.stop_ids,
                   pad_token_id=self.processor.pad_token_id)
    reply = self.processor.tokenizer.decode(out.tokens[0, :out.lengths[0]].tolist(), skip_special_tokens=False)
    return parse_letter(reply, len(options))
