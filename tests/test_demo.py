"""The README's main job on a short stream: teacher memories (ground-truth check of the whole
pipeline), and the shipped policy when the repository carries one."""

import json
import os

import pytest

from experiments import demo


def test_teacher_demo_writes_results_and_report(tmp_path):
  results = demo.run(str(tmp_path), policy="teacher", seed=5, clips=6, progress=False)
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  overall = results["overall"]
  assert overall["n"] > 0 and 0 < overall["cov"] < 1  # the budget forces a real choice
  assert abs(overall["acc"] - overall["cov"] * overall["prec"]) < 1e-9  # Acc = Cov x Prec by definition
  assert results["memory_quality"]["faithfulness"] == 1.0 and results["memory_quality"]["redundancy"] == 0.0
  report = (tmp_path / "report.html").read_text()
  assert report.count("<img") == 6 * 4 + 1 and "Acc / Cov / Prec" in report  # + the scores chart
  assert "<a href='scores.png'><img" in report
  from PIL import Image

  with Image.open(tmp_path / "scores.png") as image:
    assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 200
  assert set(json.loads((tmp_path / "memory.json").read_text())["descriptions"]) <= {str(c) for c in range(6)}
  from taskmem_jax.tensorboard import read_scalars

  tags = read_scalars(str(tmp_path / "tb"))  # the table as TensorBoard scalars
  assert tags["qa/overall/acc"] == [(0, pytest.approx(overall["acc"]))]
  assert len(tags) == 3 * (len(results["tasks"]) + 1)


# The shipped policy's demo run is exercised by colab/02_phase_one (tests/test_notebooks.py).


SHIPPED = all(os.path.isfile(os.path.join(d, "config.json")) for d in (demo.POLICY_DIR, demo.PHASE_ONE_DIR))


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED, reason="no shipped policies")
def test_demo_grows_phase_two_tables(tmp_path):
  from taskmem_jax.configs import phase_two_synthworld

  cfg = phase_two_synthworld.get_config("demo")
  cfg.num_contexts, cfg.cache.num_samples, cfg.cache.max_new_tokens, cfg.max_new_tokens = 1, 2, 64, 64
  cfg.dpo.steps, cfg.dpo.pairs_per_step, cfg.dpo.num_minibatches = 1, 1, 1
  # Two tasks whose fifth question comes before the 4-clip stream ends, so both adapters take over on it.
  cfg.tasks, cfg.drift_from, cfg.drift_to, cfg.drift_ks = "counting,spatial", "counting", "spatial", (1, 2)
  results = demo.run(str(tmp_path), policy="shipped", seed=1000, clips=4, progress=False,
                     with_phase_two=True, phase_two_config=cfg)
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["cross_task"] == results["cross_task"]
  assert set(on_disk["phase_two"]) and set(on_disk["cross_task"]) == set(on_disk["phase_two"])
  assert set(on_disk["ceiling"]) == set(on_disk["phase_two"])  # the ceiling of task focus, per adapted task
  for row in on_disk["ceiling"].values():
    assert row["gain"] == pytest.approx(row["focused"] - row["random"]) and row["budget"] == cfg.teacher_budget
  from taskmem_jax.memory.store import EpisodicMemory

  work = tmp_path / "phase_two"  # the evaluation's memories and adapters, deployed causally
  base = EpisodicMemory.load(str(work / "memories" / "base" / "synthworld_1000.json"))
  for task, row in on_disk["phase_two"].items():
    assert row["before"]["n"] == row["after"]["n"] > 0
    adapted = EpisodicMemory.load(str(work / "memories" / f"{task}@5" / "synthworld_1000.json"))
    switch = row["switch_clip"]
    assert {c: d for c, d in adapted.items() if c < switch} == {c: d for c, d in base.items() if c < switch}
    assert json.loads((work / "adapters" / f"{task}@5.json").read_text())["pairs"] == row["adapters"][0]["pairs"]
  assert (tmp_path / "phase_two.png").stat().st_size > 1000
  report = (tmp_path / "report.html").read_text()
  assert "Phase Two: task adapters" in report and "Cross-task Acc" in report and "Ceiling of task focus" in report
  from taskmem_jax.tensorboard import read_scalars

  tags = read_scalars(str(tmp_path / "tb"))
  trained = [t for t, row in on_disk["phase_two"].items() if row["adapters"][0]["pairs"]]
  assert {tag.split("/")[1] for tag in tags if tag.startswith("dpo/")} == set(trained)  # one DPO run per task with pairs
  assert "qa/overall/acc" in tags  # the Phase One table
  for task in trained:
    assert [step for step, _ in tags[f"dpo/{task}/loss"]] == [1]  # cfg.dpo.steps = 1
