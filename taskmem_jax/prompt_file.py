"""A prompt file: the words a run shows the policy, the judges and the answerer (``--prompt_template=FILE``).

One JSON object with three optional sections; every key in them is optional too, and what a file leaves
out keeps its current value (the policy: the checkpoint's recorded window prompt; judges and answerer:
our words):

    {
      "policy":   {"layout", "preamble", "instruction", "hint", "question", "new_clip_request"},
      "judges":   {"faithfulness_intro", "faithfulness", "non_redundancy", "ranking", "task"},
      "answerer": {"multiple_choice", "abstain_option", "free_form"}
    }

Texts carry named slots that are filled in one pass; only these exact names are slots, and every other
brace is text (a JSON example needs no escaping). Each slot must appear exactly once:
- policy: instruction {hint} {memories}; hint {questions}; question {question}
  (memory.prompt.WindowPrompt);
- judges: faithfulness and non_redundancy {memories} {candidate}; ranking {candidates} {reply};
  task {questions} {memories} {reply} (rewards.judge_prompts.JudgeTexts). {reply} is our reply
  instruction, which the reply parsers read;
- answerer: multiple_choice {memory} {question} {options}; free_form {memory} {question}
  (eval.answer_prompt.AnswererTexts). A free-form answer abstains by saying "Insufficient Information".

We ship our own words only. To run with the official wording of the memory prompt (TaskMem
memory/memory_process.py), write the file from a checkout of the official repository; README.md,
"Prompts", gives the three lines that do it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from taskmem_jax.eval.answer_prompt import AnswererTexts
from taskmem_jax.io import atomic_write_json
from taskmem_jax.memory.prompt import DEFAULT, WindowPrompt
from taskmem_jax.rewards.judge_prompts import JudgeTexts

SECTIONS = ("policy", "judges", "answerer")


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
  """policy: the window-prompt fields the file sets (applied over a checkpoint's own by window_prompt());
  judges, answerer: the complete texts (ours where the file says nothing)."""
  policy: dict[str, str] = dataclasses.field(default_factory=dict)
  judges: JudgeTexts = JudgeTexts()
  answerer: AnswererTexts = AnswererTexts()

  def window_prompt(self, checkpoint_prompt: WindowPrompt = DEFAULT) -> WindowPrompt:
    """The checkpoint's window prompt with this file's policy fields in place of its own."""
    return dataclasses.replace(checkpoint_prompt, **self.policy)


def parse_prompt_template(values: Any, source: str = "prompt template") -> PromptTemplate:
  """A PromptTemplate from the file's JSON value; ValueError naming `source`, the section and the key."""
  if not isinstance(values, dict):
    raise ValueError(f"{source}: expected a JSON object with some of the sections {SECTIONS}, "
                     f"got {type(values).__name__}")
  unknown = sorted(set(values) - set(SECTIONS))
  if unknown:
    raise ValueError(f"{source}: unknown sections {unknown}; expected some of {list(SECTIONS)}")
  policy = values.get("policy", {})
  WindowPrompt.from_dict(policy, f"{source}: policy")  # the keys and slots, checked now rather than at use
  return PromptTemplate(policy=dict(policy),
                        judges=JudgeTexts.from_dict(values.get("judges", {}), f"{source}: judges"),
                        answerer=AnswererTexts.from_dict(values.get("answerer", {}), f"{source}: answerer"))


def load_prompt_template(path: str | os.PathLike | None) -> PromptTemplate:
  """The prompt file at `path`; our words (PromptTemplate()) for None or ""."""
  if not path:
    return PromptTemplate()
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      values = json.load(f)
  except OSError as e:
    raise ValueError(f"--prompt_template={path}: cannot read it ({e})") from e
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e
  return parse_prompt_template(values, path)


def write_prompt_template(path: str | os.PathLike, template: PromptTemplate) -> None:
  """Writes `template` as a prompt file (every text, so that the file shows the whole wording)."""
  atomic_write_json(os.fspath(path), {"policy": dict(template.policy),
                                      "judges": dataclasses.asdict(template.judges),
                                      "answerer": dataclasses.asdict(template.answerer)})
