"""Advantages and policy losses against values computed by hand in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from taskmem_jax.rl.advantages import group_advantages
from taskmem_jax.rl.losses import aggregate, grpo_loss, gspo_loss, k3_kl


def test_group_advantages_normalise_with_unbiased_std():
  r = np.array([[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5]])
  mean = r.mean(1, keepdims=True)
  std = r.std(1, ddof=1, keepdims=True)
  np.testing.assert_allclose(group_advantages(r), (r - mean) / (std + 1e-6), rtol=1e-6, atol=1e-6)
  # An all-equal group gives zeros, not NaN.
  assert np.all(np.asarray(group_advantages(r))[1] == 0)
  # A group of one: mean 0, std 1 (verl).
  np.testing.assert_allclose(group_advantages(np.array([[0.7], [-2.0]])), [[0.7], [-2.0]], rtol=1e-6)


def test_negative_gate_only_punishes_negative_rewards():
  r = np.array([[0.55, 0.5, -0.5, -1.5]])
  plain = np.asarray(group_advantages(r))
  gated = np.asarray(group_advantages(r, negative_gate=True))
  expected = plain.copy()
  expected[(plain < 0) & (r >= 0)] = 0.0
  np.testing.assert_allclose(gated, expected, rtol=1e-6)
  r2 = np.array([[1.0, 0.2, 0.3, -0.5]])
  a2 = np.asarray(group_advantages(r2, negative_gate=True))
  mean, std = r2.mean(), r2.std(ddof=1)
  by_hand = (r2 - mean) / (std + 1e-6)
  assert mean == 0.25 and by_hand[0, 2] > 0
  by_hand[0, 1] = 0.0  # 0.2 - 0.25 < 0 but its reward is positive; -0.5 keeps its negative advantage
  np.testing.assert_allclose(a2, by_hand, rtol=1e-5)


def test_optimize_threshold_protects_best_tier():
  # Rewards: two correct memories (0.5 and 0.55 with richness), one wrong, one format failure.
  r = np.array([[0.5, 0.55, -0.5, -1.5]])
  parsed = np.array([[True, True, True, False]])
  correctness = np.array([[1.0, 1.0, -1.0, 0.0]])
  a = np.asarray(group_advantages(r, mode="optimize_threshold", parsed=parsed, correctness=correctness))
  mean, std = r.mean(), r.std(ddof=1)
  by_hand = (r - mean) / (std + 1e-6)
  by_hand = np.maximum(by_hand, 0.0) * np.array([1, 1, 0, 0]) + by_hand * np.array([0, 0, 1, 1])
  np.testing.assert_allclose(a, by_hand, rtol=1e-5)
  # Make the correct ones fall below the mean: a large positive outlier with correctness 1 but reward 0.
  r = np.array([[0.5, 0.5, 3.0, 0.0]])
  parsed = np.array([[True, True, True, True]])
  correctness = np.array([[1.0, 1.0, -1.0, 1.0]])
  a = np.asarray(group_advantages(r, mode="optimize_threshold", parsed=parsed, correctness=correctness))
  by_hand = (r - r.mean()) / (r.std(ddof=1) + 1e-6)
  assert by_hand[0, 0] < 0 and by_hand[0, 3] < 0
  by_hand[0, :2] = 0.0  # best tier (1) with reward > 0: clamped; index 3 has reward 0: not protected
  np.testing.assert_allclose(a, by_hand, rtol=1e-5)
  # Best correctness < 0: nothing is protected.
  a = group_advantages(np.array([[0.1, -0.2]]), mode="optimize_threshold", parsed=np.array([[True, True]]),
                       correctness=np.array([[-1.0, -1.0]]))
  np.testing.assert_allclose(a, group_advantages(np.array([[0.1, -0.2]])), rtol=1e-6)


def test_failed_groups_get_zero_and_bad_input_is_named():
  r = np.array([[1.0, 0.0], [1.0, 0.0]])
  a = np.asarray(group_advantages(r, group_failed=np.array([False, True])))
  assert np.all(a[1] == 0) and a[0, 0] > 0
  with pytest.raises(ValueError, match="mode"):
    group_advantages(r, mode="max")
  with pytest.raises(ValueError, match=r"\[N groups"):
    group_advantages(np.zeros(4))
  with pytest.raises(ValueError, match="optimize_threshold"):
    group_advantages(r, mode="optimize_threshold")


def _np_logsumexp_free_case():
  rng = np.random.default_rng(0)
  logp = rng.normal(-2.0, 0.5, (3, 5))
  old = logp + rng.normal(0.0, 0.3, (3, 5))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], np.float32)
  adv = np.array([1.5, -0.7, 0.3])
  return logp, old, mask, adv


def test_gspo_value_and_gradient_by_hand():
  logp, old, mask, adv = _np_logsumexp_free_case()
  n = mask.sum(1)
  s = np.exp(((logp - old) * mask).sum(1) / n)  # sequence ratios
  per_seq = np.maximum(-adv * s, -adv * np.clip(s, 0.8, 1.28))
  loss, metrics = gspo_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask))
  np.testing.assert_allclose(loss, per_seq.mean(), rtol=1e-5)
  # Gradient wrt log pi_t: (1/B) * (1/n_b) * (-A_b * s_b) on tokens of unclipped sequences, 0 where clipped.
  grad = jax.grad(lambda lp: gspo_loss(lp, jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask))[0])(
      jnp.asarray(logp))
  unclipped = (-adv * s) >= (-adv * np.clip(s, 0.8, 1.28))
  clipped_active = ~(((s > 1.28) & (adv > 0)) | ((s < 0.8) & (adv < 0)))
  active = unclipped & clipped_active
  by_hand = (mask * (-adv * s / n * active)[:, None]) / 3
  np.testing.assert_allclose(grad, by_hand, rtol=1e-5, atol=1e-7)
  assert set(metrics) >= {"clip_frac_low", "clip_frac_high", "ratio_mean"}


def test_gspo_clips_sequence_ratio():
  # One sequence with ratio e^{0.5} = 1.65 > 1.28 and a positive advantage: clipped, zero gradient.
  logp = jnp.array([[0.0, 0.0]])
  old = jnp.array([[-0.5, -0.5]])
  mask = jnp.ones((1, 2))
  loss, metrics = gspo_loss(logp, old, jnp.array([2.0]), mask)
  np.testing.assert_allclose(loss, -2.0 * 1.28, rtol=1e-6)
  assert float(metrics["clip_frac_high"]) == 1.0
  grad = jax.grad(lambda lp: gspo_loss(lp, old, jnp.array([2.0]), mask)[0])(logp)
  np.testing.assert_allclose(grad, 0.0)


def test_grpo_token_level_by_hand():
  logp, old, mask, adv = _np_logsumexp_free_case()
  ratio = np.exp(logp - old)
  losses = np.maximum(-adv[:, None] * ratio, -adv[:, None] * np.clip(ratio, 0.8, 1.28))
  loss, _ = grpo_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask))
  np.testing.assert_allclose(loss, (losses * mask).sum() / mask.sum(), rtol=1e-5)
  loss2, _ = grpo_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask),
                       aggregation="seq-mean-token-mean")
  np.testing.assert_allclose(loss2, ((losses * mask).sum(1) / mask.sum(1)).mean(), rtol=1e-5)


def test_k3_kl_by_hand():
  logp, ref, mask, _ = _np_logsumexp_free_case()
  r = ref - logp
  kl = np.exp(r) - r - 1
  np.testing.assert_allclose(k3_kl(jnp.asarray(logp), jnp.asarray(ref), jnp.asarray(mask)),
                             (kl * mask).sum() / mask.sum(), rtol=1e-5)
  assert float(k3_kl(jnp.asarray(logp), jnp.asarray(logp), jnp.asarray(mask))) == 0.0


def test_aggregate_modes_and_error():
  v = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
  m = jnp.array([[1, 1, 1], [1, 0, 0]])
  np.testing.assert_allclose(aggregate(v, m, "token-mean"), 10 / 4)
  np.testing.assert_allclose(aggregate(v, m, "seq-mean-token-mean"), (2 + 4) / 2)
  np.testing.assert_allclose(aggregate(v, m, "seq-mean-token-sum"), (6 + 4) / 2)
  with pytest.raises(ValueError, match="aggregation"):
    aggregate(v, m, "sum")


def test_nsr_gate_names_map_to_the_advantage_options():
  """nsr_gate: the official default is optimize_threshold without the eq. 6 gate; "eq6" is the gate alone."""
  from taskmem_jax.rl.advantages import nsr_gate_args
  r = np.array([[1.0, -0.5, 0.1, 0.05]], np.float32)
  plain = np.asarray(group_advantages(r, **nsr_gate_args("none")))
  eq6 = np.asarray(group_advantages(r, **nsr_gate_args("eq6")))
  # By hand: eq. 6 zeroes a negative advantage whose own reward is not negative (0.1 and 0.05 here).
  assert plain[0, 2] < 0 and plain[0, 3] < 0 and eq6[0, 2] == 0 and eq6[0, 3] == 0 and eq6[0, 1] == plain[0, 1] < 0
  assert nsr_gate_args("optimize_threshold") == {"mode": "optimize_threshold", "negative_gate": False}
  with pytest.raises(ValueError, match="nsr_gate='eq7'"):
    nsr_gate_args("eq7")
