"""Pair selection on small hand-built preference graphs, each expected pair worked out by hand."""

import pytest

from taskmem_jax.phase_two.pairs import Candidate, Pair, longest_paths, select_pair

C = lambda correct=True, tokens=30: Candidate(correct, tokens)


def test_longest_paths_and_cycles():
  # 0 -> 1 -> 2 and 0 -> 2: longest 0 -> 2 is 2 edges.
  lengths = longest_paths(3, [(0, 1), (1, 2), (0, 2)])
  assert lengths[0][2] == 2 and lengths[0][1] == 1 and lengths[2][0] == -1 and lengths[1][1] == 0
  assert longest_paths(3, [(0, 1), (1, 2), (2, 0)]) is None


def test_chain_picks_the_longest_path():
  # Preferences (winner, loser): 1 > 0, 2 > 1, 3 > 2 -> edges 0->1->2->3; undefeated 3; longest from 0.
  cands = [C(), C(), C(), C()]
  assert select_pair(cands, [(1, 0), (2, 1), (3, 2)]) == Pair(3, 0, 3, 0)


def test_length_gap_limits_the_loser():
  # Same chain, but rollout 0 is 25 tokens longer than 3: the next best loser is 1 (path of 2).
  cands = [C(tokens=55), C(tokens=40), C(), C()]
  assert select_pair(cands, [(1, 0), (2, 1), (3, 2)]) == Pair(3, 1, 2, 10)
  # A gap of exactly 20 is out (strict bound); 19 is in.
  assert select_pair([C(tokens=50), C()], [(1, 0)]) is None
  assert select_pair([C(tokens=49), C()], [(1, 0)]) == Pair(1, 0, 1, 19)


def test_quality_filters():
  # A correct loser beaten by an incorrect winner: that preference is dropped.
  assert select_pair([C(correct=True), C(correct=False)], [(1, 0)]) is None
  # Both incorrect: no pair, even though the preference is kept.
  assert select_pair([C(correct=False), C(correct=False)], [(1, 0)]) is None
  # Correct winner over incorrect loser: fine.
  assert select_pair([C(correct=False), C(correct=True)], [(1, 0)]) == Pair(1, 0, 1, 0)


def test_cycle_drops_the_context_and_ties_break_by_gap_then_id():
  assert select_pair([C(), C(), C()], [(1, 0), (2, 1), (0, 2)]) is None
  # Two undefeated winners (2 and 3), each beating one loser by a path of 1: smaller gap wins (3 vs 1).
  cands = [C(tokens=30), C(tokens=40), C(tokens=36), C(tokens=41)]
  assert select_pair(cands, [(2, 0), (3, 1)]) == Pair(3, 1, 1, 1)
  # Equal paths and gaps: the lower winner id.
  cands = [C(tokens=30), C(tokens=30), C(tokens=30), C(tokens=30)]
  assert select_pair(cands, [(2, 0), (3, 1)]) == Pair(2, 0, 1, 0)
  with pytest.raises(ValueError, match="indices"):
    select_pair(cands, [(1, 1)])
  assert select_pair(cands, []) is None
