"""colab/: every notebook's .py and .ipynb pair say the same, and each notebook runs top to bottom.

The notebooks run in a real Jupyter kernel (nbclient) at their tiny settings (TASKMEM_NOTEBOOK_FAST=1),
from colab/ as Colab would open them; their outputs and files are checked, so they cannot rot.
"""

import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
NOTEBOOKS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(COLAB, "[0-9][0-9]_*.py")))
POLICY = os.path.join(ROOT, "assets", "synthworld_policy", "config.json")


def _cells(notebook) -> list[tuple[str, str]]:
  return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_every_notebook_is_a_pair_with_the_same_cells():
  import jupytext

  assert NOTEBOOKS == ["01_quickstart", "02_phase_one", "03_phase_two", "04_real_checkpoint"]
  for name in NOTEBOOKS:
    ipynb = os.path.join(COLAB, name + ".ipynb")
    assert os.path.isfile(ipynb), f"{ipynb} missing: run `jupytext --sync colab/{name}.py`"
    py_cells, nb_cells = _cells(jupytext.read(os.path.join(COLAB, name + ".py"))), _cells(jupytext.read(ipynb))
    assert py_cells == nb_cells, f"colab/{name}: .py and .ipynb differ; run `jupytext --sync colab/{name}.py`"
    assert json.load(open(ipynb))["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"


def _execute(name: str, out_dir: str, monkeypatch, **env) -> list[str]:
  """Runs colab/<name>.ipynb in a fresh kernel; returns every text output (stream and plain text) in order."""
  import nbformat
  from nbclient import NotebookClient

  monkeypatch.setenv("TASKMEM_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("TASKMEM_NOTEBOOK_OUT", out_dir)
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  notebook = nbformat.read(os.path.join(COLAB, name + ".ipynb"), as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
  texts = []
  for cell in notebook.cells:
    for output in cell.get("outputs", []):
      texts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
  return texts


@pytest.mark.skipif(not os.path.isfile(POLICY), reason="no shipped policy")
def test_quickstart_runs(tmp_path, monkeypatch):
  text = "".join(_execute("01_quickstart", str(tmp_path), monkeypatch))
  assert (tmp_path / "stream.mp4").stat().st_size > 0
  assert text.count("| overall |") == 2  # the policy's table and the teacher's
  assert "teacher: faithfulness 1.000" in text  # the teacher writes only true facts


@pytest.mark.skipif(not os.path.isfile(POLICY), reason="no shipped policy")
def test_phase_one_notebook_runs(tmp_path, monkeypatch):
  text = "".join(_execute("02_phase_one", str(tmp_path), monkeypatch))
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2]
  assert (tmp_path / "run" / "curves.png").stat().st_size > 1000  # the chart the notebook shows
  assert (tmp_path / "run" / "export" / "config.json").is_file()
  assert text.count("| overall |") == 2  # before and after
  for policy in ("shipped", "after"):
    assert json.loads((tmp_path / policy / "results.json").read_text())["overall"]["n"] > 0
    assert (tmp_path / policy / "report.html").is_file()


@pytest.mark.skipif(not os.path.isfile(POLICY), reason="no shipped policy")
def test_phase_two_notebook_runs(tmp_path, monkeypatch):
  text = "".join(_execute("03_phase_two", str(tmp_path), monkeypatch))
  results = json.loads((tmp_path / "phase_two.json").read_text())
  assert set(results["phase_two"]) <= {"counting", "spatial"} and results["phase_two"]
  assert (tmp_path / "phase_two.png").stat().st_size > 1000
  adapters = sorted(os.listdir(tmp_path / "adapters"))
  assert adapters == sorted(f"{task}.safetensors" for task in results["phase_two"])
  assert "cross-task Acc: diagonal mean" in text and "trainable parameters" in text


def test_real_checkpoint_notebook_runs_sharded(tmp_path, monkeypatch):
  # Two simulated devices: the tiny checkpoint is loaded under a real 2-way FSDP mesh.
  text = "".join(_execute("04_real_checkpoint", str(tmp_path), monkeypatch,
                          XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  assert "'fsdp': 2" in text
  assert "'new_tokens': 64" in text
  assert (tmp_path / "tiny_checkpoint" / "config.json").is_file()
