"""The window prompt SynthWorld's policies are trained on: its own words, fixed with its vocabulary.

The word-level tokenizer (tokenizer.py) knows only the words of this prompt, so rewording the project's
default prompt (memory.prompt.DEFAULT) must not change SynthWorld's vocabulary or make the shipped
policies read [UNK]. PROMPT keeps the instruction the assets/synthworld_* checkpoints were trained with
(recorded in their window_prompt.json), with the task hint where the official prompt puts it: after the
last rule, before "Output format". Everything else is DEFAULT's.
"""

from __future__ import annotations

import dataclasses

from taskmem_jax.memory.prompt import DEFAULT, WindowPrompt

INSTRUCTION = (
    "\nWrite a detailed, cohesive description of the video, naming people by their on-screen identity tags."
    " Cover their appearance, their actions and movements, what they say, and how they behave towards each"
    " other.\n\nRules:\n"
    "- Refer to a person only by the identity tag shown on screen; skip people without a tag.\n"
    "- Keep the description continuous with the preceding description.\n"
    "- Describe the events directly; do not begin with \"The video\".\n"
    "- Skip an event or sentence that is cut off at the end of the video.\n"
    "- After thinking, output a JSON object with the single key \"description\".{hint}\n\n"
    "Output format:\n```json\n{\"description\": \"...\"}\n```\n\n"
    "[Description of the preceding part]:\n{memories}\n\n"
    "Describe only what the preceding description does not already cover, stay coherent with it, and do not"
    " repeat it. If it is empty, describe the video from the start. Write one or two sentences.")

# SynthWorld's clips come after the text (the policies were trained so); real checkpoints use the official
# video-first layout.
PROMPT = dataclasses.replace(DEFAULT, layout="video_last", instruction=INSTRUCTION)


def synthworld_prompt(layout: str = "video_last") -> WindowPrompt:
  """PROMPT with `layout` ("video_last" or "official")."""
  return dataclasses.replace(PROMPT, layout=layout)
