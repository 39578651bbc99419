"""Preference pairs for DPO: from one context's judged comparisons to at most one (chosen, rejected).

The official selection (taskmem-spec.md §3.3; TaskMem training/stage2/gen_ep_data.py `pairs`), per
context (one window and its N cached rollouts):
1. drop comparisons whose winner's correctness (the Phase-One quality check) is below the loser's;
2. build the preference graph, an edge loser -> winner per comparison; a context whose graph has a
   cycle is dropped (its preferences contradict each other);
3. for every undefeated rollout x (no edge leaving it) take the candidates y with a path y -> ... -> x,
   a description length within MAX_LENGTH_GAP tokens of x's, and not both incorrect; the chosen pair is
   the one with the longest path from y to x (ties: the smaller length gap, then the lower ids);
4. one pair per context (the best over all x), or none.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

MAX_LENGTH_GAP = 20  # tokens; the official strict bound


class Candidate(NamedTuple):
  """One cached rollout of a context: correct = passed the Phase-One quality check; desc_tokens = its
  description's length in tokens."""
  correct: bool
  desc_tokens: int


class Pair(NamedTuple):
  chosen: int
  rejected: int
  path_length: int
  length_gap: int


def longest_paths(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]] | None:
  """lengths[y][x] = edges on the longest path y -> x (-1 if none; 0 on the diagonal), or None when the
  graph has a cycle."""
  out = [[] for _ in range(n)]
  indegree = [0] * n
  for a, b in set(edges):
    out[a].append(b)
    indegree[b] += 1
  order, ready = [], [v for v in range(n) if indegree[v] == 0]
  while ready:
    v = ready.pop()
    order.append(v)
    for w in out[v]:
      indegree[w] -= 1
      if indegree[w] == 0:
        ready.append(w)
  if len(order) < n:
    return None
  lengths = [[-1] * n for _ in range(n)]
  for y in range(n):
    lengths[y][y] = 0
    for v in order:  # topological order: every path into v is final before v extends it
      if lengths[y][v] >= 0:
        for w in out[v]:
          lengths[y][w] = max(lengths[y][w], lengths[y][v] + 1)
  return lengths


def select_pair(candidates: Sequence[Candidate], preferences: Sequence[tuple[int, int]],
                max_length_gap: int = MAX_LENGTH_GAP) -> Pair | None:
  """preferences: (winner, loser) index pairs into candidates (the agreed both-order verdicts).
  Returns the context's pair, or None (no usable preference, a cycle, or no candidate in range)."""
  n = len(candidates)
  for w, l in preferences:
    if not (0 <= w < n and 0 <= l < n) or w == l:
      raise ValueError(f"preference ({w}, {l}): indices must be distinct and in [0, {n})")
  kept = [(l, w) for w, l in preferences if candidates[w].correct >= candidates[l].correct]
  if not kept:
    return None
  lengths = longest_paths(n, kept)
  if lengths is None:
    return None
  losers = {l for l, _ in kept}
  best = None
  for x in range(n):
    if x in losers:  # x lost somewhere: not undefeated
      continue
    for y in range(n):
      if y == x or lengths[y][x] < 1:
        continue
      gap = abs(candidates[x].desc_tokens - candidates[y].desc_tokens)
      if gap >= max_length_gap or not (candidates[x].correct or candidates[y].correct):
        continue
      key = (-lengths[y][x], gap, x, y)
      if best is None or key < best[0]:
        best = (key, Pair(x, y, lengths[y][x], gap))
  return None if best is None else best[1]
