"""colab/: every notebook's .py and .ipynb pair say the same, and each notebook runs top to bottom.

The notebooks run in a real Jupyter kernel (nbclient) at their tiny settings (TASKMEM_NOTEBOOK_FAST=1),
from colab/ as Colab would open them; their outputs and files are checked, so they cannot rot.
"""

import glob
import json
import os

import pytest

pytestmark = pytest.mark.notebook

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
  adapters = sorted(name for name in os.listdir(tmp_path / "adapters") if name.endswith(".safetensors"))
  assert adapters == sorted(f"{task}@5.safetensors" for task in results["phase_two"])
  assert "cross-task Acc: diagonal mean" in text and "trainable parameters" in text


def test_real_checkpoint_notebook_runs_sharded(tmp_path, monkeypatch):
  # Two simulated devices: the tiny checkpoint is loaded under a real 2-way FSDP mesh.
  text = "".join(_execute("04_real_checkpoint", str(tmp_path), monkeypatch,
                          XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  assert "'fsdp': 2" in text
  assert "'new_tokens': 64" in text
  assert (tmp_path / "tiny_checkpoint" / "config.json").is_file()


def test_colab_install_cell_picks_the_runtime_extra(tmp_path, monkeypatch):
  """colab/install.py (what a notebook's first cell runs in Colab after cloning): the extra matches the
  runtime, pip installs the checkout editable, and the kernel then imports from the checkout."""
  import importlib.util
  import sys

  spec = importlib.util.spec_from_file_location("colab_install", os.path.join(COLAB, "install.py"))
  install = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(install)  # not __main__: nothing is installed on import
  assert install.runtime_extra({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, lambda p: False) == "tpu"
  assert install.runtime_extra({}, lambda p: p == "/dev/accel0") == "tpu"
  assert install.runtime_extra({}, lambda p: p == "/dev/nvidia0") == "gpu"
  assert install.runtime_extra({}, lambda p: False) == ""
  (tmp_path / "taskmem-jax").mkdir()
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, "path", list(sys.path))
  monkeypatch.setattr(install, "runtime_extra", lambda: "gpu")
  calls = []
  command = install.install(run=lambda cmd, check: calls.append((cmd, check)))
  assert calls == [(command, True)] and command[-2:] == ["-e", "taskmem-jax[gpu]"]
  assert os.getcwd() == str(tmp_path / "taskmem-jax") and sys.path[0] == os.getcwd()
  # Every notebook's first code cell runs it only where taskmem_jax is not importable.
  for name in sorted(os.listdir(COLAB)):
    if name.endswith(".py") and name[0].isdigit():
      first = open(os.path.join(COLAB, name)).read().split("\n# %%\n")[1]
      assert 'find_spec("taskmem_jax") is None' in first and "colab/install.py" in first, name
