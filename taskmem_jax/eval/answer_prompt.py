"""The answerer's prompt: the memory string and one question in, the user message out; the reply's letter
or abstention parsed back. The video is never shown: answers come from memory only, as in the paper's
protocol (eval/answerers.py holds the answerers that send these prompts).

The prompt (our words) gives the serialised episodic memory (EpisodicMemory.to_string), the question and
its lettered options, and an extra option for "the memory does not say"; choosing it is an abstention.
The texts are an ``AnswererTexts`` (named slots, filled by memory.prompt.fill; ``DEFAULT_TEXTS`` holds our
words), which a run may replace from a prompt file (taskmem_jax.prompt_file).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from taskmem_jax.memory.prompt import SlottedTexts, fill

ABSTAIN_TEXT = "The memory does not contain the answer."
INSTRUCTION = ("Answer the question using only the memory above. Reply with the letter of one option. If the "
               "memory does not contain the answer, reply with the letter of the last option.")
# Free form (EgoTempo): the answer, or INSUFFICIENT for an abstention (answerers.parse_free_form reads it).
INSUFFICIENT = "Insufficient Information"
FREE_FORM_INSTRUCTION = ("Answer the question in a few words using only the memory above. Actions refer to the "
                         f"camera wearer. If the memory does not contain the answer, reply exactly: {INSUFFICIENT}.")

# Each text and the slots it holds exactly once.
ANSWERER_SLOTS = {"multiple_choice": ("memory", "question", "options"), "abstain_option": (),
                  "free_form": ("memory", "question")}


@dataclasses.dataclass(frozen=True)
class AnswererTexts(SlottedTexts):
  """The answerer's texts. multiple_choice: {memory} (the serialised memory), {question}, {options} (one
  "<letter>. <text>" line per option, the abstain option last); abstain_option: that option's text;
  free_form: {memory}, {question}; the reply is the answer or INSUFFICIENT."""
  multiple_choice: str = "{memory}\n\nQuestion: {question}\n{options}\n\n" + INSTRUCTION
  abstain_option: str = ABSTAIN_TEXT
  free_form: str = "{memory}\n\nQuestion: {question}\n\n" + FREE_FORM_INSTRUCTION

  SLOTS = ANSWERER_SLOTS


DEFAULT_TEXTS = AnswererTexts()


def qa_prompt(memory_text: str, question: str, options: Sequence[str], letters: str = "ABCDEFGH",
              texts: AnswererTexts = DEFAULT_TEXTS) -> tuple[str, str]:
  """(the user message, the abstain letter). options: the answer texts, in letter order."""
  if not 2 <= len(options) < len(letters):
    raise ValueError(f"options: {len(options)} given; need 2 to {len(letters) - 1}")
  abstain = letters[len(options)]
  lines = [f"{letters[i]}. {text}" for i, text in enumerate(options)] + [f"{abstain}. {texts.abstain_option}"]
  return fill(texts.multiple_choice, {"memory": memory_text, "question": question, "options": "\n".join(lines)}), abstain


def free_form_prompt(memory_text: str, question: str, texts: AnswererTexts = DEFAULT_TEXTS) -> str:
  """The free-form answerer's user message."""
  return fill(texts.free_form, {"memory": memory_text, "question": question})


def parse_letter(reply: str, num_options: int, letters: str = "ABCDEFGH") -> str | None:
  """The first standalone option letter after any </think>; None for the abstain letter or no letter."""
  text = reply.rsplit("</think>", 1)[-1]
  match = re.search(rf"\b([{letters[:num_options + 1]}])\b", text)
  if match is None or match.group(1) == letters[num_options]:
    return None
  return match.group(1)
