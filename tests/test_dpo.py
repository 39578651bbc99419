"""DPO on the steer tree: the loss by hand, the backbone untouched, learning, exact resume."""

import jax
import numpy as np
import pytest
from flax import nnx

from taskmem_jax.adapters import steer as S
from taskmem_jax.models import qwen3_vl
from taskmem_jax.phase_two.dpo import dpo_loss, train_steer

from helpers import dpo_config as _config, dpo_pairs as _pairs


def test_dpo_loss_by_hand():
  pc, pr = np.array([-10.0, -3.0]), np.array([-12.0, -2.0])
  rc, rr = np.array([-11.0, -3.5]), np.array([-11.5, -2.5])
  delta = (pc - rc) - (pr - rr)  # [1.5, 0.0]
  by_hand = np.mean(np.log1p(np.exp(-0.1 * delta)))
  loss, metrics = dpo_loss(pc, pr, rc, rr, 0.1)
  np.testing.assert_allclose(loss, by_hand, rtol=1e-6)
  np.testing.assert_allclose(metrics["accuracy"], 0.5)


@pytest.mark.slow
def test_steer_learns_backbone_frozen_and_first_loss_is_log2(tmp_path):
  model = S.add_steer(qwen3_vl.init_random(qwen3_vl.preset("tiny"), seed=0), [2])
  backbone_before = jax.tree.map(np.asarray, nnx.state(model, nnx.All(nnx.Param, nnx.Not(S.SteerParam))))
  result = train_steer(_config(), model, _pairs(model.config), pad_id=0, progress=False)
  history = result["history"]
  # At step 1 the first mini-batch sees the zero steer, where policy == reference: delta 0, loss log 2.
  np.testing.assert_allclose(history[0]["delta"], 0.0, atol=1e-5)
  np.testing.assert_allclose(history[0]["loss"], np.log(2.0), rtol=1e-5)
  assert history[-1]["delta"] > history[0]["delta"] + 1.0 and history[-1]["accuracy"] == 1.0
  assert np.abs(S.get_steer(model)).max() > 0
  backbone_after = jax.tree.map(np.asarray, nnx.state(model, nnx.All(nnx.Param, nnx.Not(S.SteerParam))))
  for a, b in zip(jax.tree.leaves(backbone_before), jax.tree.leaves(backbone_after)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_resume_equals_straight(tmp_path):
  def fresh():
    return S.add_steer(qwen3_vl.init_random(qwen3_vl.preset("tiny"), seed=0), [2])

  straight = fresh()
  train_steer(_config(4), straight, _pairs(straight.config), pad_id=0, progress=False)
  resumed = fresh()
  train_steer(_config(2), resumed, _pairs(resumed.config), pad_id=0, workdir=str(tmp_path), progress=False)
  again = fresh()
  out = train_steer(_config(4), again, _pairs(again.config), pad_id=0, workdir=str(tmp_path), progress=False)
  assert [h["step"] for h in out["history"]] == [3, 4]
  np.testing.assert_allclose(S.get_steer(again), S.get_steer(straight), rtol=1e-6)
  # Both runs logged to workdir/tb, one event file each: steps 1-2, then 3-4 after the resume.
  from taskmem_jax.tensorboard import read_scalars

  assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2
  scalars = read_scalars(str(tmp_path / "tb"))
  assert [step for step, _ in scalars["loss"]] == [1, 2, 3, 4] and "grad_norm" in scalars
  np.testing.assert_allclose([v for _, v in scalars["loss"][2:]], [h["loss"] for h in out["history"]], rtol=1e-6)
  with pytest.raises(ValueError, match="no preference pairs"):
    train_steer(_config(), fresh(), [], pad_id=0)
