r"""Writes a prompt file with the official memory prompt, read from a checkout of the official repository.

  git clone https://github.com/Hope-Rita/TaskMem /tmp/TaskMem
  python -m experiments.official_prompt --checkout=/tmp/TaskMem --out=official_prompt.json
  python -m experiments.evaluate ... --prompt_template=official_prompt.json

We do not ship the official wording; this reads it from the checkout and turns it into a prompt file
(taskmem_jax/prompt_file.py). Its "policy" section only: the preamble (memory/memory_process.py
``system_prompt``), the instruction (``episodic_prompt``, whose two positional slots become {hint} and
"[Description of the preceding part]:\n{memories}", exactly what ``construct_episodic_input`` passes), and
the task hint (training/stage2/gen_mme_dataset.py ``SUPPLEMENT_PROMPT`` with ``EPISODIC_INSTRUCTION``, one
"- question" line per question). The windows rendered with it equal the official code's text (checked
against the official repository at commit 089135b). The module constants are read with ``ast``, so the
checkout's dependencies need not be installed.
"""

from __future__ import annotations

import ast
import os

from absl import flags

from taskmem_jax import cli
from taskmem_jax.prompt_file import load_prompt_template, parse_prompt_template, write_prompt_template

FLAGS = flags.FLAGS

POLICY_FILE = os.path.join("memory", "memory_process.py")
HINT_FILE = os.path.join("training", "stage2", "gen_mme_dataset.py")


def define_flags() -> None:
  flags.DEFINE_string("checkout", None, "A checkout of the official TaskMem repository.", required=True)
  flags.DEFINE_string("out", "official_prompt.json", "The prompt file to write.")


def string_constants(path: str) -> dict[str, str]:
  """The module-level string constants of a Python file, read without importing it."""
  try:
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
  except OSError as e:
    raise ValueError(f"{path}: cannot read it ({e}); is --checkout a TaskMem checkout?") from e
  return {target.id: node.value.value for node in tree.body
          if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
          for target in node.targets if isinstance(target, ast.Name)}


def official_policy(checkout: str) -> dict[str, str]:
  """The prompt file's "policy" section from the checkout."""
  policy = string_constants(os.path.join(checkout, POLICY_FILE))
  hint = string_constants(os.path.join(checkout, HINT_FILE))
  for path, values, names in ((POLICY_FILE, policy, ("system_prompt", "episodic_prompt")),
                              (HINT_FILE, hint, ("SUPPLEMENT_PROMPT", "EPISODIC_INSTRUCTION"))):
    missing = [n for n in names if n not in values]
    if missing:
      raise ValueError(f"{os.path.join(checkout, path)}: no string constant {missing}; the official code changed?")
  try:
    instruction = policy["episodic_prompt"].format("{hint}", "[Description of the preceding part]:\n{memories}")
    supplement = hint["SUPPLEMENT_PROMPT"].format(hint["EPISODIC_INSTRUCTION"], "{questions}")
  except (IndexError, KeyError, ValueError) as e:
    raise ValueError(f"{checkout}: the official prompts no longer take the positional slots this reads ({e})") from e
  return {"preamble": policy["system_prompt"], "instruction": instruction, "hint": supplement,
          "question": "- {question}"}


def write_official_prompt(checkout: str, out: str) -> None:
  """Writes the prompt file (its slots checked before anything is written)."""
  template = parse_prompt_template({"policy": official_policy(checkout)}, f"{checkout} (official prompt)")
  write_prompt_template(out, template)
  load_prompt_template(out)  # reads back


def main(argv):
  del argv
  write_official_prompt(FLAGS.checkout, FLAGS.out)
  print(f"wrote {FLAGS.out}; pass it as --prompt_template (or config.prompt_template)")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
