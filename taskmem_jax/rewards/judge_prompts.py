"""The judges' prompts (our words, modelled on taskmem-spec.md §2.2) and the parsers of their replies.

Shared by local_llm.LocalLLMJudge and http.HTTPJudge, so that a local checkpoint and a hosted model
read the same questions. Three prompts:
- faithfulness (the video judge): the window's video, the preceding description and one candidate;
  passes iff every statement is supported by the frames (burned-in subtitles and tags included, audio
  ignored) and the candidate continues the preceding description without transition words;
- non-redundancy (the text judge): the preceding description and one candidate; passes iff it repeats no
  fact and has no box, subtitle, transcript-label or conclusion talk;
- ranking: the preceding description and M labelled candidates; the labels, best first, between
  [RANK START] and [RANK END].
Verdicts are a single label, PASS_LABEL or FAIL_LABEL ("1" / "0", as the official judges answer), so a
local model can be read from the log-probs of two tokens and a hosted one from a one-character reply.
All fixed text is ASCII (the tiny test tokenizer keeps only printable ASCII).
"""

from __future__ import annotations

import json
import re
from typing import Sequence

from taskmem_jax.rewards.judge import Ranking, Verdict, check_ranking

PASS_LABEL, FAIL_LABEL = "1", "0"
RANK_START, RANK_END = "[RANK START]", "[RANK END]"
RANK_SEPARATOR = ", "
MAX_RANKED = 26  # single-character labels: digits 1-9, or letters A-Z beyond nine candidates
EMPTY_PRECEDING = "(empty)"

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

RANKING_TASK = """You compare candidate descriptions of the same new part of a video. Rank them by how much \
unique information each one adds beyond the preceding description, without overlapping with it. Prefer \
concrete facts about people, objects, actions and speech; a description that weaves what people say into \
the narrative beats one that refers to subtitles."""


def _preceding(previous: Sequence[str]) -> str:
  """The preceding memories as the policy saw them: joined by single spaces (spec §1.1)."""
  text = " ".join(p for p in previous if p)
  return text if text.strip() else EMPTY_PRECEDING


def faithfulness_prompt(previous: Sequence[str], candidate: str) -> tuple[str, str]:
  """(text before the video, text after it) for the video judge."""
  after = (f"\n[Description of the preceding part]:\n{_preceding(previous)}\n\n"
           f"[Candidate description]:\n{candidate}\n\n{FAITHFULNESS_TASK}")
  return FAITHFULNESS_INTRO, after


def non_redundancy_prompt(previous: Sequence[str], candidate: str) -> str:
  """The text judge's whole user message."""
  return (f"{NON_REDUNDANCY_TASK}\n\n[Description of the preceding part]:\n{_preceding(previous)}\n\n"
          f"[Candidate description]:\n{candidate}")


def rank_labels(m: int) -> tuple[str, ...]:
  """One single-character label per candidate: "1".."9" up to nine, else "A".."Z"; ValueError beyond 26."""
  if not 0 <= m <= MAX_RANKED:
    raise ValueError(f"{m} candidates to rank: at most {MAX_RANKED} (one single-character label each)")
  if m <= 9:
    return tuple(str(i + 1) for i in range(m))
  return tuple(chr(ord("A") + i) for i in range(m))


def ranking_prompt(previous: Sequence[str], candidates: Sequence[str]) -> str:
  """The ranking judge's user message; candidate i carries rank_labels(M)[i]."""
  labels = rank_labels(len(candidates))
  example = RANK_SEPARATOR.join(labels[1:] + labels[:1])  # not the given order, so it suggests no answer
  lines = [f"Candidate {label}: {text}" for label, text in zip(labels, candidates)]
  return (f"{RANKING_TASK}\n\n[Description of the preceding part]:\n{_preceding(previous)}\n\n"
          + "\n".join(lines)
          + f"\n\nWrite the labels of all {len(candidates)} candidates, best first, separated by commas, between "
          f"{RANK_START} and {RANK_END}, for example: {RANK_START} {example} {RANK_END}")


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


def _excerpt(text, limit: int = 120) -> str:
  text = repr(text)
  return text if len(text) <= limit else text[:limit] + "..."
