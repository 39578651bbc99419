"""Reward-weight sweeps: spec parsing, grid and random expansion, config overrides, the summary."""

import json
import os

import pytest

from taskmem_jax.configs import phase_one_synthworld
from taskmem_jax.rl import sweep

POLICY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "synthworld_policy")


def test_spec_grid_and_random():
  fields = sweep.parse_spec("reward.usefulness_scale=0,0.1; reward.memory_token_threshold=40,60;lr=1e-5")
  assert fields == {"reward.usefulness_scale": [0, 0.1], "reward.memory_token_threshold": [40, 60], "lr": [1e-5]}
  settings = sweep.grid(fields)
  assert len(settings) == 4 and settings[1] == {"reward.usefulness_scale": 0, "reward.memory_token_threshold": 60,
                                                "lr": 1e-5}
  drawn = sweep.sample(sweep.parse_spec("reward.usefulness_scale=0.0:0.5;reward.format_penalty=-1.5,-6"), 20, 1)
  assert len(drawn) == 20
  assert all(0.0 <= s["reward.usefulness_scale"] <= 0.5 for s in drawn)
  assert {s["reward.format_penalty"] for s in drawn} == {-1.5, -6}
  assert drawn == sweep.sample(sweep.parse_spec("reward.usefulness_scale=0.0:0.5;reward.format_penalty=-1.5,-6"),
                               20, 1)
  for bad in ("", "lr", "lr=", "=1"):
    with pytest.raises(sweep.SweepError):
      sweep.parse_spec(bad)
  with pytest.raises(sweep.SweepError, match="random search"):
    sweep.grid({"lr": ["1:2"]})


def test_apply_and_population_overrides():
  cfg = phase_one_synthworld.get_config()
  new = sweep.apply(cfg, {"reward.usefulness_scale": 0, "num_streams": 2})
  assert new.reward.usefulness_scale == 0.0 and isinstance(new.reward.usefulness_scale, float)
  assert new.num_streams == 2 and cfg.num_streams == 4 and cfg.reward.usefulness_scale == 0.1
  with pytest.raises(sweep.SweepError, match="no 'usefulnes_scale'"):
    sweep.apply(cfg, {"reward.usefulnes_scale": 0})
  with pytest.raises(sweep.SweepError, match="no 'rewards'"):
    sweep.apply(cfg, {"rewards.x": 0})
  assert sweep.population_overrides([{"reward.usefulness_scale": 0}]) == [{"usefulness_scale": 0}]
  with pytest.raises(sweep.SweepError, match="population mode"):
    sweep.population_overrides([{"lr": 1e-4}])


def test_final_metrics_and_summary(tmp_path):
  history = [{"reward": r, "pass_rate": 0.5, "faithfulness": float("nan") if r < 0 else 1.0, "redundancy": 0.0,
              "format_failure": 0.0, "memory_tokens": 30.0, "reward/richness": 0.01} for r in (-1.0, 0.0, 0.5, 1.0)]
  final = sweep.final_metrics(history)
  assert final["reward"] == pytest.approx(0.5) and final["faithfulness"] == 1.0
  table = sweep.summarise([{"name": "run_0", "setting": {"reward.usefulness_scale": 0}, "final": final}],
                          str(tmp_path / "sweep"))
  assert "| run_0 | 0 | 0.500 |" in table
  assert json.load(open(tmp_path / "sweep.json"))[0]["final"]["reward"] == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(POLICY, "config.json")), reason="no shipped policy")
def test_sweep_runs_and_summarises(tmp_path):
  from experiments import sweep as sweep_main

  cfg = phase_one_synthworld.get_config()
  cfg.num_streams, cfg.group_size, cfg.steps, cfg.off_policy_steps = 1, 2, 1, 1
  cfg.n_min, cfg.n_max, cfg.world_clips = 1, 2, 3
  cfg.max_new_tokens = 32
  settings = sweep.grid(sweep.parse_spec("reward.format_penalty=-1.5,-6"))
  table = sweep_main.run(cfg, settings, str(tmp_path), "population", progress=False)
  assert "member_1" in table
  runs = json.load(open(tmp_path / "sweep.json"))
  assert [r["setting"]["reward.format_penalty"] for r in runs] == [-1.5, -6]
  assert os.path.isfile(tmp_path / "population" / "export" / "member_0" / "config.json")
  assert '<img src="curves.png"' in (tmp_path / "curves.html").read_text()
  assert '<img src="curves.png"' in (tmp_path / "population" / "curves.html").read_text()
  assert (tmp_path / "curves.png").stat().st_size > 1000 and (tmp_path / "population" / "curves.png").is_file()


def test_curves_page_draws_each_series(tmp_path):
  from taskmem_jax.eval.curves import write_curves, write_curves_png

  rows = [{"step": s, "reward": 0.1 * s, "faithfulness": float("nan") if s == 1 else 1.0} for s in (1, 2, 3)]
  write_curves(tmp_path / "c.html", {"a": rows, "b": rows[:1]}, title="t", metrics=("reward", "faithfulness", "x"))
  page = (tmp_path / "c.html").read_text()
  assert "&#9632; a" in page and "&#9632; b" in page
  # The charts as one PNG next to the page (c.png), shown on it by relative path: two charts (reward and
  # faithfulness; "x" has no values), side by side.
  from PIL import Image

  assert '<img src="c.png"' in page
  with Image.open(tmp_path / "c.png") as image:
    assert image.format == "PNG" and image.size[0] > 1.8 * image.size[1]
  write_curves(tmp_path / "empty.html", {"a": rows}, title="t", metrics=("x",))
  assert "No metric" in (tmp_path / "empty.html").read_text() and not (tmp_path / "empty.png").exists()
  assert write_curves_png(tmp_path / "none.png", {"a": rows}, metrics=("x",)) is None
  assert not (tmp_path / "none.png").exists() and not list(tmp_path.glob(".*.tmp"))
