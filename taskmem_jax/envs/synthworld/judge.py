"""The SynthWorld judge: faithfulness, non-redundancy and ranking from the world's facts, exactly.

- faithful: the description states at least one fact (envs/synthworld/reader.parse_memory) and every fact
  it states is true. scope="window" (default): a fact of the window the policy saw, [ctx.start, ctx.end),
  which is what the official video judge checks (it sees the whole 50-s window; taskmem-spec.md §2.2 and
  §7 item 11); scope="clip": a fact of the new clip only (stricter; what qa.memory_quality counts);
- non-redundant: no stated fact is one the preceding memories already state, no fact is stated twice, and
  every clause is a fact (any other clause is meta, box or conclusion talk the text judge rejects);
- rank: by the number of distinct true new facts (true under the scope, not stated by the preceding
  memories), most first; ties keep the given order, so the ranking is deterministic.
"""

from __future__ import annotations

from typing import Sequence

from taskmem_jax.envs.synthworld.reader import ParsedFact, clauses, parse_clause, parse_memory
from taskmem_jax.rewards.judge import Judge, Ranking, Verdict, WindowContext

SCOPES = ("window", "clip")


class GroundTruthJudge(Judge):
  name = "ground_truth"

  def __init__(self, scope: str = "window"):
    if scope not in SCOPES:
      raise ValueError(f"GroundTruthJudge scope={scope!r}: choose one of {SCOPES}")
    self.scope = scope

  def _truth(self, ctx: WindowContext) -> set[ParsedFact]:
    if ctx.stream is None:
      raise ValueError(f"GroundTruthJudge needs the SynthWorld stream in WindowContext.stream (clip {ctx.clip})")
    if self.scope == "clip":
      facts = ctx.stream.facts_in(ctx.clip)
    else:
      facts = [f for f in ctx.stream.facts if ctx.start <= f.time < ctx.end]
    return {ParsedFact.of(f) for f in facts}

  def faithfulness(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[Verdict]:
    truth = self._truth(ctx)
    where = f"clip {ctx.clip}" if self.scope == "clip" else f"the window [{ctx.start:g}, {ctx.end:g}) s"
    verdicts = []
    for description in descriptions:
      facts = parse_memory(description)
      false = [f for f in facts if f not in truth]
      if not facts:
        verdicts.append(Verdict(False, "states no fact"))
      elif false:
        verdicts.append(Verdict(False, f"{len(false)} of {len(facts)} facts are not true of {where}"))
      else:
        verdicts.append(Verdict(True))
    return verdicts

  def non_redundancy(self, ctx: WindowContext, descriptions: Sequence[str]) -> list[Verdict]:
    stated = {f for d in ctx.previous for f in parse_memory(d)}
    verdicts = []
    for description in descriptions:
      pieces = clauses(description)
      facts = [parse_clause(p) for p in pieces]
      other = [p for p, f in zip(pieces, facts) if f is None]
      facts = [f for f in facts if f is not None]
      if other:
        verdicts.append(Verdict(False, f"clause that is not a fact: {other[0]!r}"))
      elif any(f in stated for f in facts):
        verdicts.append(Verdict(False, "repeats a fact of the preceding memories"))
      elif len(set(facts)) < len(facts):
        verdicts.append(Verdict(False, "states a fact twice"))
      else:
        verdicts.append(Verdict(True))
    return verdicts

  def rank(self, ctx: WindowContext, descriptions: Sequence[str]) -> Ranking:
    truth = self._truth(ctx)
    stated = {f for d in ctx.previous for f in parse_memory(d)}
    new = [len((set(parse_memory(d)) & truth) - stated) for d in descriptions]
    return Ranking(tuple(sorted(range(len(descriptions)), key=lambda i: -new[i])))

