"""Phase-One reward terms, the ground-truth judge and score_group, against values computed by hand."""

import json

import numpy as np
import pytest

from taskmem_jax.envs.synthworld import WorldConfig, generate
from taskmem_jax.envs.synthworld.judge import GroundTruthJudge
from taskmem_jax.memory.parse import parse_response
from taskmem_jax.rewards.config import RewardConfig, RewardConfigError
from taskmem_jax.rewards.judge import Judge, Ranking, Verdict, WindowContext
from taskmem_jax.rewards.score import FORMAT_FAILED, JUDGE_FAILED, PARSED, score_group
from taskmem_jax.rewards.terms import FACE_TAGS, SYNTHWORLD_TAGS, richness_rewards, thinking_reward

CFG = RewardConfig()


def test_defaults_are_the_official_launch_values_and_bad_fields_are_named():
  assert (CFG.correct_reward, CFG.wrong_reward, CFG.format_penalty, CFG.think_penalty, CFG.think_threshold,
          CFG.memory_token_threshold, CFG.usefulness_scale) == (0.5, -0.5, -1.5, -1.0, 1200, 150, 0.1)
  with pytest.raises(RewardConfigError, match="think_threshold"):
    RewardConfig(think_threshold=0)
  with pytest.raises(RewardConfigError, match="format_penalty"):
    RewardConfig(format_penalty=float("nan"))
  with pytest.raises(RewardConfigError, match="unknown reward fields"):
    RewardConfig.from_dict({"corect_reward": 1.0})
  assert RewardConfig.from_dict(CFG.to_dict()) == CFG


@pytest.mark.parametrize("length, expected", [(0, 0.0), (1200, 0.0), (1500, -0.25), (1800, -0.5), (2400, -1.0),
                                              (9000, -1.0)])
def test_thinking_reward_piecewise(length, expected):
  assert thinking_reward(length, CFG) == pytest.approx(expected)


def test_richness_by_hand():
  # Order best first: memory 2, then 0, then 1 -> scores 1, 0.5, 0 -> x 0.05.
  np.testing.assert_allclose(richness_rewards((2, 0, 1), 3, CFG), [0.025, 0.0, 0.05])
  np.testing.assert_allclose(richness_rewards((1, 0), 2, CFG), [0.0, 0.05])
  np.testing.assert_allclose(richness_rewards((0,), 1, CFG), [0.0])
  with pytest.raises(ValueError, match="permutation"):
    richness_rewards((0, 0, 1), 3, CFG)


def test_identity_tags():
  assert FACE_TAGS.malformed("<face_3> waves to <face_12>.") == []
  assert FACE_TAGS.malformed("<face> waves; face 3 nods; <face 4> and face_5 sit.") == [
      "<face>", "face 3", "<face 4>", "face_5"]
  assert FACE_TAGS.malformed("she turned her face away") == []
  assert SYNTHWORLD_TAGS.malformed("person 3 appears in the north-west.") == []
  assert SYNTHWORLD_TAGS.malformed("person appears; person_2 moves.") == ["person", "person_2"]


# --- score_group with the ground-truth judge ---------------------------------------------------------

THINK_END = 7  # a token id standing for </think>


def response(description, *, think=3, extra_memory_tokens=0, raw=None):
  """A ParseResult of a response with `think` thinking tokens and a memory span sized from the text."""
  text = raw if raw is not None else "ok</think>" + json.dumps({"description": description})
  memory = 1 + len(description.split()) + extra_memory_tokens
  tokens = [1] * think + [THINK_END] + [2] * (memory - 1)
  return parse_response(text, tokens=tokens, think_end_id=THINK_END)


@pytest.fixture(scope="module")
def world():
  stream = generate(4, WorldConfig(num_clips=4))
  clip = next(c for c in range(1, 4) if len(stream.facts_in(c)) >= 3 and stream.facts_in(c - 1))
  return stream, clip


def test_score_group_by_hand(world):
  stream, clip = world
  facts = [f.text for f in stream.facts_in(clip)]
  previous = (stream.facts_in(clip - 1)[0].text,)
  ctx = WindowContext(clip=clip, start=0.0, end=10.0 * (clip + 1), previous=previous, stream=stream)
  false_fact = "the sign changes from 3 to 3."
  parses = [
      response(facts[0] + " " + facts[1]),          # 0: faithful, new, 2 facts -> ranked first
      response(facts[2]),                           # 1: faithful, 1 fact -> ranked second
      response(facts[0] + " " + false_fact),        # 2: unfaithful
      response(previous[0]),                        # 3: repeats the preceding memory (and unfaithful)
      response("x", raw="ok</think>not json"),      # 4: format failure
      response(facts[1], extra_memory_tokens=200),  # 5: over the 150-token limit
      response(facts[1] + " the video ends."),      # 6: meta talk
      response(facts[2], think=1800),               # 7: valid, long thinking: -0.5
  ]
  out = score_group(parses, ctx, GroundTruthJudge(), CFG)
  assert list(out.status) == [PARSED] * 4 + [FORMAT_FAILED] + [PARSED] * 3
  assert list(out.passed) == [True, True, False, False, False, False, False, True]
  # Ranked among the passing ones (0, 1, 7): 0 has 2 new facts, 1 and 7 one each (stable order: 1 before 7).
  rich = np.zeros(8)
  rich[[0, 1, 7]] = [0.05, 0.025, 0.0]
  np.testing.assert_allclose(out.richness, rich)
  expected = np.array([0.5 + 0.05, 0.5 + 0.025, -0.5, -0.5, -1.5, -0.5, -0.5, 0.5 - 0.5])
  np.testing.assert_allclose(out.reward, expected)
  assert out.faithful[2] == 0 and out.non_redundant[3] == 0 and out.within_budget[5] == 0
  assert out.non_redundant[6] == 0 and "not a fact" in out.reasons[6]
  assert np.isnan(out.faithful[4]) and out.reasons[4] == "the text after </think> is not JSON"
  np.testing.assert_allclose(out.correctness, [1, 1, -1, -1, 0, -1, -1, 1])
  assert not out.group_failed
  # failure_penalty: the format failure gets min(valid rewards) + penalty.
  out = score_group(parses, ctx, GroundTruthJudge(), RewardConfig(failure_penalty=-0.25))
  assert out.reward[4] == pytest.approx(-0.75)


class _FlakyJudge(Judge):
  name = "flaky"

  def __init__(self, fail_index=None, fail_rank=False):
    self.fail_index, self.fail_rank = fail_index, fail_rank

  def faithfulness(self, ctx, descriptions):
    return [Verdict(None, "timeout") if i == self.fail_index else Verdict(True) for i in range(len(descriptions))]

  def non_redundancy(self, ctx, descriptions):
    return [Verdict(True)] * len(descriptions)

  def rank(self, ctx, descriptions):
    return Ranking(None, "malformed") if self.fail_rank else Ranking(tuple(range(len(descriptions))))


def test_judge_failures_zero_the_response_and_mark_the_group_but_a_failed_ranking_keeps_rollout_order():
  ctx = WindowContext(clip=0, start=0.0, end=10.0)
  parses = [response("a b"), response("c d"), response("e f")]
  out = score_group(parses, ctx, _FlakyJudge(fail_index=1), CFG)
  assert out.group_failed and out.status[1] == JUDGE_FAILED and out.reward[1] == 0.0
  assert "timeout" in out.reasons[1]
  out = score_group(parses, ctx, _FlakyJudge(), CFG)
  np.testing.assert_allclose(out.reward, [0.55, 0.525, 0.5])
  # A failed ranking falls back to the identity order (the official reward): the rollouts' own order, even
  # when the candidates went to the judge shuffled; nothing is marked failed.
  for rng in (None, np.random.default_rng(3)):
    out = score_group(parses, ctx, _FlakyJudge(fail_rank=True), CFG, rng=rng)
    assert not out.group_failed and all(out.status == 0) and "ranking failed" in out.reasons[0]
    np.testing.assert_allclose(out.reward, [0.55, 0.525, 0.5])
  out = score_group(parses, ctx, _FlakyJudge(fail_rank=True), CFG, rank=False)  # no ranking asked
  assert not out.group_failed and np.all(out.richness == 0) and np.all(out.passed)


def test_ground_truth_judge_needs_the_stream():
  with pytest.raises(ValueError, match="WindowContext.stream"):
    GroundTruthJudge().faithfulness(WindowContext(clip=0, start=0.0, end=10.0), ["a"])


def test_ground_truth_judge_scopes(world):
  """window (the official judge's view): a fact of an earlier clip of the window is faithful, one from
  before the window is not; clip: only the new clip's facts are."""
  stream, clip = world
  earlier, new = stream.facts_in(clip - 1)[0].text, stream.facts_in(clip)[0].text
  window = WindowContext(clip=clip, start=10.0 * (clip - 1), end=10.0 * (clip + 1), stream=stream)
  assert [v.ok for v in GroundTruthJudge().faithfulness(window, [new, earlier, new + " " + earlier])] == [True] * 3
  strict = GroundTruthJudge("clip").faithfulness(window, [new, earlier])
  assert [v.ok for v in strict] == [True, False] and f"clip {clip}" in strict[1].reason
  later = WindowContext(clip=clip, start=10.0 * clip, end=10.0 * (clip + 1), stream=stream)  # earlier clip outside
  (verdict,) = GroundTruthJudge("window").faithfulness(later, [earlier])
  assert verdict.ok is False and f"[{10 * clip}, {10 * (clip + 1)}) s" in verdict.reason
  # Ranking counts true new facts under the scope: the earlier-clip fact counts in the window only.
  assert GroundTruthJudge().rank(window, [new, new + " " + earlier]).order == (1, 0)
  assert GroundTruthJudge("clip").rank(window, [new, new + " " + earlier]).order == (0, 1)
  with pytest.raises(ValueError, match="scope='new'"):
    GroundTruthJudge("new")


class _FirstIsBestJudge(_FlakyJudge):
  """Ranks in the order given: a judge with a pure position bias."""


def test_ranking_sees_a_seeded_shuffle():
  ctx = WindowContext(clip=0, start=0.0, end=10.0)
  parses = [response("a b"), response("c d"), response("e f"), response("g h")]
  out = score_group(parses, ctx, _FirstIsBestJudge(), CFG, rng=np.random.default_rng(3))
  order = np.random.default_rng(3).permutation(4)  # what the judge was shown, position 0 first
  expected = np.zeros(4)
  expected[order] = 0.05 * (1 - np.arange(4) / 3)
  np.testing.assert_allclose(out.richness, expected)
  assert not np.array_equal(order, np.arange(4))
