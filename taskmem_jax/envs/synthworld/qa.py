"""Memory-only question answering over a stream, and the quality of the memories themselves.

`evaluate_memory` asks every question of every task of an answerer (any callable (question, memory) ->
option letter or None) and scores it with metrics.score. Each question sees only the memories of the
clips seen by the time it arrives (clips <= question.asked_after_clip), as in the streaming protocol.

`memory_quality` measures SynthWorld memories against the stream's ground truth by parsing them with
the SynthWorld reader (envs.synthworld.reader).
"""

from __future__ import annotations

from collections.abc import Callable

from taskmem_jax.envs.synthworld.questions import LETTERS, WorldQuestion
from taskmem_jax.envs.synthworld.reader import ParsedFact, parse_memory
from taskmem_jax.envs.synthworld.world import World
from taskmem_jax.eval.metrics import score
from taskmem_jax.memory.store import MAX_PREVIOUS, EpisodicMemory

Answerer = Callable[[WorldQuestion, EpisodicMemory], "str | None"]


def memory_until(memory: EpisodicMemory, clip: int) -> EpisodicMemory:
  """The memories of clips <= clip: what the store held when that clip had been memorised."""
  return EpisodicMemory(memory.interval, {c: d for c, d in memory.items() if c <= clip})


def evaluate_memory(stream: World, memory: EpisodicMemory, questions_by_task: dict[str, list[WorldQuestion]],
                    answerer: Answerer) -> tuple[list[tuple[str, str | None, str]], dict]:
  """Answers every question from the memory alone; returns (records, scores).

  records: (task, predicted letter or None, correct letter) per question, tasks in the given order;
  scores: metrics.score(records). Raises ValueError when a memory clip lies outside the stream, a
  question is filed under the wrong task or asks beyond the stream, or the answerer returns something
  other than one of the question's letters or None.
  """
  if not isinstance(memory, EpisodicMemory):
    raise TypeError(f"memory: expected an EpisodicMemory, got {type(memory).__name__}")
  _check_clips(stream, memory)
  views = {}  # asked_after_clip -> memory view; questions share few distinct arrival clips
  records = []
  for task, questions in questions_by_task.items():
    for q in questions:
      if q.task != task:
        raise ValueError(f"{q.text!r}: a {q.task} question listed under task {task!r}")
      if not 0 <= q.asked_after_clip < stream.num_clips:
        raise ValueError(f"{q.text!r}: asked after clip {q.asked_after_clip}, but the stream has clips "
                         f"0..{stream.num_clips - 1}")
      view = views.get(q.asked_after_clip)
      if view is None:
        view = views[q.asked_after_clip] = memory_until(memory, q.asked_after_clip)
      predicted = answerer(q, view)
      letters = LETTERS[:len(q.options)]
      if predicted is not None and predicted not in letters:
        raise ValueError(f"{q.text!r}: the answerer returned {predicted!r}; expected one of {letters} or None")
      records.append((task, predicted, q.answer))
  return records, score(records)


def memory_quality(stream: World, memory: EpisodicMemory, num_previous: int = MAX_PREVIOUS) -> dict:
  """Ground-truth quality of SynthWorld memories (facts parsed by the reader, matched on their fields).

  faithfulness: share of memories every parsed fact of which is a true fact of the memory's own clip; a
  memory with no parseable fact counts as unfaithful (nothing it says can be checked). redundancy: share
  of memories stating a fact already stated by one of the `num_previous` memories before it (the ones
  the policy's window showed). facts_per_memory: mean parsed facts per memory. fact_precision: share of
  all parsed facts that are true facts of their memory's clip (nan when none parsed), the per-fact
  counterpart of faithfulness. unparsed: share of memories with no parseable fact. memories: how many.
  """
  if not isinstance(memory, EpisodicMemory):
    raise TypeError(f"memory: expected an EpisodicMemory, got {type(memory).__name__}")
  if not len(memory):
    raise ValueError("memory: empty; there are no memories to measure")
  _check_clips(stream, memory)
  faithful = redundant = unparsed = total_facts = true_facts = 0
  for clip, description in memory.items():
    facts = parse_memory(description)
    truth = {ParsedFact.of(f) for f in stream.facts_in(clip)}
    earlier = {f for d in memory.previous(clip, num_previous) for f in parse_memory(d)}
    faithful += bool(facts) and all(f in truth for f in facts)
    redundant += any(f in earlier for f in facts)
    unparsed += not facts
    total_facts += len(facts)
    true_facts += sum(f in truth for f in facts)
  n = len(memory)
  return {"faithfulness": faithful / n, "redundancy": redundant / n, "facts_per_memory": total_facts / n,
          "fact_precision": true_facts / total_facts if total_facts else float("nan"), "unparsed": unparsed / n,
          "memories": n}


def _check_clips(stream: World, memory: EpisodicMemory) -> None:
  outside = [c for c in memory.clips() if c >= stream.num_clips]
  if outside:
    raise ValueError(f"memory holds clips {outside}, but the stream has clips 0..{stream.num_clips - 1}")
