"""The judges' prompts (our words, modelled on taskmem-spec.md §2.2) and the parsers of their replies.

Shared by local_llm.LocalLLMJudge and http.HTTPJudge, so that a local checkpoint and a hosted model
read the same questions. Three prompts:
- faithfulness (the video judge): the window's video, the preceding description and one candidate;
  passes iff every statement is supported by the frames (burned-in subtitles and tags included, audio
  ignored) and the candidate continues the preceding description without transition words;
- non-redundancy (the text judge): the preceding description and one candidate; passes iff it repeats no
  fact and has no box, subtitle, transcript-label or conclusion talk;
- ranking: the preceding description and M labelled candidates; the labels, best first, between
  [RANK START] and [RANK END];
and the Phase-Two task-usefulness prompt (taskmem-spec.md §3.2): up to 5 example questions of one task
type (never their answers) and two memories shown as {"0": ..., "1": ...}; which memory is more useful
for answering such questions, or a tie. A hosted judge replies {"more_useful": 0 | 1 | -1, "rationale":
...}; a local one is read from the log-probs of TASK_LABELS ("0", "1", and "-" for a tie).
Verdicts are a single label, PASS_LABEL or FAIL_LABEL ("1" / "0", as the official judges answer), so a
local model can be read from the log-probs of two tokens and a hosted one from a one-character reply.
All fixed text is ASCII (the tiny test tokenizer keeps only printable ASCII).

The texts are a ``JudgeTexts`` (strings with named slots, filled by memory.prompt.fill; ``DEFAULT_TEXTS``
holds our words), which a run may replace from a prompt file (taskmem_jax.prompt_file). The {reply} slots
take our reply instructions, which the parsers below read, so other wording keeps the reply contract.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Sequence

from taskmem_jax.memory.prompt import SlottedTexts, fill
from taskmem_jax.rewards.judge import Ranking, Verdict, check_ranking
from taskmem_jax.rewards.task_judge import TIE, Preference, check_questions

PASS_LABEL, FAIL_LABEL = "1", "0"
RANK_START, RANK_END = "[RANK START]", "[RANK END]"
RANK_SEPARATOR = ", "
MAX_RANKED = 26  # single-character labels: digits 1-9, or letters A-Z beyond nine candidates
EMPTY_PRECEDING = "(empty)"
# The local task judge's labels: memory "0", memory "1", a tie. "-" (the first character of the hosted
# judge's -1) is one token in Qwen's tokenizers, in the tiny test tokenizer and in SynthWorld's vocabulary.
TASK_LABELS = ("0", "1", "-")
TASK_WINNERS = (0, 1, TIE)  # what TASK_LABELS[i] means

FAITHFULNESS_INTRO = ("You check descriptions of a video for accuracy. You are given a video window, the "
                      "description of the part before it, and a candidate description of the window's newest "
                      "part.\n")

FAITHFULNESS_TASK = f"""Judge the candidate against what the video shows: its images and any text drawn on \
them, such as subtitles and identity tags. Ignore sound. The candidate passes only if
- every statement in it is supported by the video, and
- it reads as a natural continuation of the preceding description, without transition words such as \
"continuing" or "the video continues".
Reply with a single digit: {PASS_LABEL} if the candidate passes, {FAIL_LABEL} if it does not."""

NON_REDUNDANCY_TASK = f"""You check a candidate description of a video clip against the description of \
the part before it. The candidate fails if it does any of the following:
1. states again a fact that the preceding description already gives;
2. mentions bounding boxes, boxes around people, or coordinates;
3. talks about subtitles or captions themselves (for example "the subtitle reads") instead of reporting \
what was said;
4. writes dialogue as a transcript, with speaker labels inside the quotation marks;
5. makes a concluding or scene-setting remark about the video (for example "the video ends here" or \
"based on the previous videos").
Reply with a single digit: {PASS_LABEL} if the candidate does none of these, {FAIL_LABEL} if it does any."""

RANKING_TASK = """You compare candidate descriptions of the same part of a video with each other. Rank them by \
how much useful information each one carries: unique, non-overlapping facts, not the same fact said twice. \
Prefer concrete facts about people, objects, actions and speech; a description that weaves what people say \
into the narrative beats one that refers to subtitles."""

TASK_INTRO = """An assistant watches a long video one short clip at a time and writes a memory of each clip. \
Later it has to answer questions from its memories alone, without seeing the video again. You help decide \
what such a memory should keep. Below are example questions of one kind that the assistant will be asked \
(their answers are not shown), followed by two candidate memories of the same clip, keyed "0" and "1". \
Decide which memory would be more useful for answering questions like these, about this clip or similar \
ones. Consider only usefulness for such questions: whether a memory records the details they depend on. \
Do not reward length or style for its own sake. If neither memory is more useful than the other, it is a tie."""

TASK_REPLY_LABEL = (f'Reply with a single character: {TASK_LABELS[0]} if memory "0" is more useful, '
                    f'{TASK_LABELS[1]} if memory "1" is more useful, or {TASK_LABELS[2]} (a hyphen) if it is a tie.')

TASK_REPLY_JSON = ('Reply with a JSON object only, in this form: {"more_useful": <0, 1 or -1>, "rationale": '
                   '"<one sentence>"}, where more_useful is the key of the more useful memory, or -1 for a tie.')


# Each text and the slots it holds exactly once.
JUDGE_SLOTS = {"faithfulness_intro": (), "faithfulness": ("memories", "candidate"),
               "non_redundancy": ("memories", "candidate"), "ranking": ("candidates", "reply"),
               "task": ("questions", "memories", "reply")}


@dataclasses.dataclass(frozen=True)
class JudgeTexts(SlottedTexts):
  """The judges' texts. faithfulness_intro: before the video; faithfulness: after it ({memories}: the
  preceding description, {candidate}); non_redundancy: the text judge's message; ranking: {candidates} (one
  "Candidate <label>: <text>" line each) and {reply}; task: {questions} (numbered lines), {memories} (the two
  memories as {"0": ..., "1": ...}) and {reply}."""
  faithfulness_intro: str = FAITHFULNESS_INTRO
  faithfulness: str = ("\n[Description of the preceding part]:\n{memories}\n\n[Candidate description]:\n{candidate}"
                       "\n\n" + FAITHFULNESS_TASK)
  non_redundancy: str = (NON_REDUNDANCY_TASK + "\n\n[Description of the preceding part]:\n{memories}\n\n"
                         "[Candidate description]:\n{candidate}")
  ranking: str = RANKING_TASK + "\n\n{candidates}\n\n{reply}"
  task: str = TASK_INTRO + "\n\n[Example questions]:\n{questions}\n\n[Memories]:\n{memories}\n\n{reply}"

  SLOTS = JUDGE_SLOTS


DEFAULT_TEXTS = JudgeTexts()


def _preceding(previous: Sequence[str]) -> str:
  """The preceding memories as the policy saw them: joined by single spaces (spec §1.1)."""
  text = " ".join(p for p in previous if p)
  return text if text.strip() else EMPTY_PRECEDING


def faithfulness_prompt(previous: Sequence[str], candidate: str,
                        texts: JudgeTexts = DEFAULT_TEXTS) -> tuple[str, str]:
  """(text before the video, text after it) for the video judge."""
  return texts.faithfulness_intro, fill(texts.faithfulness, {"memories": _preceding(previous), "candidate": candidate})


def non_redundancy_prompt(previous: Sequence[str], candidate: str, texts: JudgeTexts = DEFAULT_TEXTS) -> str:
  """The text judge's whole user message."""
  return fill(texts.non_redundancy, {"memories": _preceding(previous), "candidate": candidate})


def rank_labels(m: int) -> tuple[str, ...]:
  """One single-character label per candidate: "1".."9" up to nine, else "A".."Z"; ValueError beyond 26."""
  if not 0 <= m <= MAX_RANKED:
    raise ValueError(f"{m} candidates to rank: at most {MAX_RANKED} (one single-character label each)")
  if m <= 9:
    return tuple(str(i + 1) for i in range(m))
  return tuple(chr(ord("A") + i) for i in range(m))


def ranking_prompt(candidates: Sequence[str], texts: JudgeTexts = DEFAULT_TEXTS) -> str:
  """The ranking judge's user message; candidate i carries rank_labels(M)[i]. The candidates are ranked against
  each other, with no preceding description (as the official ranking prompt)."""
  labels = rank_labels(len(candidates))
  example = RANK_SEPARATOR.join(labels[1:] + labels[:1])  # not the given order, so it suggests no answer
  lines = [f"Candidate {label}: {text}" for label, text in zip(labels, candidates)]
  reply = (f"Write the labels of all {len(candidates)} candidates, best first, separated by commas, between "
           f"{RANK_START} and {RANK_END}, for example: {RANK_START} {example} {RANK_END}")
  return fill(texts.ranking, {"candidates": "\n".join(lines), "reply": reply})


def task_prompt(questions: Sequence[str], first: str, second: str, reply: str = "json",
                texts: JudgeTexts = DEFAULT_TEXTS) -> str:
  """The task judge's whole user message: the example questions, then {"0": first, "1": second}.

  reply: "json" (a hosted judge: TASK_REPLY_JSON) or "label" (a local one: TASK_REPLY_LABEL). Raises
  ValueError / TypeError for bad questions (task_judge.check_questions) or a memory that is not a string."""
  questions = check_questions(questions)
  for name, memory in (("first", first), ("second", second)):
    if not isinstance(memory, str):
      raise TypeError(f"{name} memory: expected a string, got {type(memory).__name__}")
  if reply not in ("json", "label"):
    raise ValueError(f"reply={reply!r}: 'json' or 'label'")
  listed = "\n".join(f"{i + 1}. {q.strip()}" for i, q in enumerate(questions))
  # ensure_ascii=False: a memory reaches the judge as written (escapes would cost tokens and clarity).
  memories = json.dumps({"0": first, "1": second}, ensure_ascii=False, indent=2)
  return fill(texts.task, {"questions": listed, "memories": memories,
                           "reply": TASK_REPLY_JSON if reply == "json" else TASK_REPLY_LABEL})


# --- parsing replies (hosted judges; the local judge never needs to parse) ----------------------

_LABEL_LINE = re.compile(r"^(?:answer|label|verdict)?\s*[:=]?\s*[\"'`(\[]?\s*([01])\s*[\"'`)\]]?\s*\.?$", re.I)


def _final_text(reply: str) -> str:
  """What follows any reasoning block, without code fences."""
  text = reply.rsplit("</think>", 1)[-1].strip()
  return re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", text).strip()


def parse_verdict(reply: str) -> Verdict:
  """A judge's reply -> Verdict. Accepts a lone "0"/"1" (optionally "Answer: 1", quoted, bold, or with a
  trailing period), a JSON object with "label" 0/1, or such a line as the reply's last line; anything else is a
  failed Verdict naming the reply, never a guess."""
  text = _final_text(reply or "")
  if text.startswith("{"):
    try:
      label = json.loads(text).get("label")
    except (ValueError, AttributeError):
      label = None
    if str(label) in (PASS_LABEL, FAIL_LABEL):
      return Verdict(str(label) == PASS_LABEL, f"label {label}")
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  for line in (text, lines[-1] if lines else ""):
    match = _LABEL_LINE.match(line.replace("*", ""))  # markdown bold
    if match:
      return Verdict(match.group(1) == PASS_LABEL, f"label {match.group(1)}")
  return Verdict(None, f"reply not parseable as {FAIL_LABEL}/{PASS_LABEL}: {_excerpt(reply)}")


def parse_ranking(reply: str, m: int) -> Ranking:
  """A reply with labels between RANK_START and RANK_END -> Ranking of m candidates (failed if the
  markers are missing or the labels are not each candidate exactly once)."""
  text = _final_text(reply or "")
  start = text.rfind(RANK_START)
  end = text.find(RANK_END, start + 1) if start >= 0 else -1
  if start < 0 or end < 0:
    return Ranking(None, f"no {RANK_START} ... {RANK_END} in reply: {_excerpt(reply)}")
  labels = rank_labels(m)
  inside = re.sub(r"\bcandidates?\b", " ", text[start + len(RANK_START):end], flags=re.I)
  found = re.findall(r"[0-9A-Za-z]+", inside)
  unknown = [f for f in found if f.upper() not in labels]
  if unknown:
    return Ranking(None, f"unknown candidate label(s) {unknown} in ranking (labels {list(labels)})")
  order = check_ranking([labels.index(f.upper()) for f in found], m)
  if order is None:
    return Ranking(None, f"ranking {found} is not each of the {m} labels exactly once")
  return Ranking(order, "")


_BARE_PREFERENCE = re.compile(r"^[\"'`(\[]?\s*(-1|0|1)\s*[\"'`)\]]?\s*\.?$")


def parse_preference(reply: str) -> Preference:
  """A task judge's reply -> Preference (winner 0, 1 or TIE; reason: the judge's rationale).

  Lenient about the wrapping: a reasoning block, code fences and text around the JSON object are skipped;
  the last object with a "more_useful" key counts; more_useful may be a number or a string ("1"); a reply
  that is only 0, 1 or -1 is accepted too. Fails, naming the reply, when no such object is found, and
  when more_useful is not 0, 1 or -1: never a guess."""
  text = _final_text(reply or "")
  objects = _json_objects(text)
  answers = [o for o in objects if "more_useful" in o]
  if not answers:
    bare = _BARE_PREFERENCE.match(text.replace("*", ""))
    if bare:
      return Preference(int(bare.group(1)), "bare label")
    what = "JSON object(s) without more_useful" if objects else "no JSON object"
    return Preference(None, f"reply not parseable as a preference ({what}): {_excerpt(reply)}")
  value = answers[-1]["more_useful"]
  winner = _winner(value)
  if winner is None:
    return Preference(None, f"more_useful={value!r} out of range: expected 0, 1 or -1")
  rationale = answers[-1].get("rationale")
  return Preference(winner, rationale.strip() if isinstance(rationale, str) else "")


def _json_objects(text: str) -> list[dict]:
  """Every JSON object that starts at some "{" of text, in order (nested ones included)."""
  decoder, found = json.JSONDecoder(), []
  for i, ch in enumerate(text):
    if ch == "{":
      try:
        value, _ = decoder.raw_decode(text, i)
      except ValueError:
        continue
      if isinstance(value, dict):
        found.append(value)
  return found


def _winner(value) -> int | None:
  """0, 1 or TIE from more_useful's value (int, integral float, or such a string); None otherwise."""
  if isinstance(value, bool):  # JSON true/false are not memory keys
    return None
  if isinstance(value, str):
    value = value.strip()
    return int(value) if value in ("0", "1", "-1") else None
  if isinstance(value, (int, float)) and value in (0, 1, -1):
    return int(value)
  return None


def _excerpt(text, limit: int = 120) -> str:
  text = repr(text)
  return text if len(text) <= limit else text[:limit] + "..."
