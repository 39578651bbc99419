"""The package as a user installs it, not as the checkout runs it: `pip wheel` builds it, a fresh venv installs
it (its dependencies taken from this environment), and from a directory outside the checkout a shipped config
(taskmem_jax/configs/sft.py) trains a tiny random model for a step and exports it."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN_ONE_CONFIG = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import taskmem_jax
    from taskmem_jax import configs
    from taskmem_jax.configs import phase_one_synthworld, sft
    from taskmem_jax.models import qwen3_vl
    from taskmem_jax.training import train

    names = sorted(f[:-3] for f in os.listdir(configs.DIR) if f.endswith(".py") and f != "__init__.py")
    cfg = sft.get_config()
    cfg.workdir, cfg.steps, cfg.batch_size, cfg.buckets = os.path.abspath("run"), 1, 2, (16,)
    cfg.export_dir = os.path.join(cfg.workdir, "export")
    cfg.warmup_steps, cfg.log_every, cfg.save_every = 1, 1, 1
    rng = np.random.default_rng(0)
    examples = [{"input_ids": rng.integers(1, 200, size=n).astype(np.int32),
                 "loss_mask": (np.arange(n) >= n // 2).astype(np.int32)} for n in (9, 12)]
    out = train(cfg, qwen3_vl.init_random(qwen3_vl.preset("tiny"), seed=0), examples, 0, progress=False)
    print(json.dumps({"package": taskmem_jax.__file__, "configs": names,
                      "phase_one_fields": len(phase_one_synthworld.get_config()),
                      "loss": out["history"][-1]["loss"],
                      "export": sorted(os.listdir(os.path.join(cfg.workdir, "export")))}))
""")


def test_the_wheel_installs_with_its_configs_and_runs_one(tmp_path):
  # Built from a copy of the sources: setuptools writes build/ and *.egg-info beside what it builds.
  source = tmp_path / "source"
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__",
                                                              "assets", "results", "colab", "tests"))
  wheels = tmp_path / "wheels"
  isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
  build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), *isolation,
                          str(source)], capture_output=True, text=True)
  assert build.returncode == 0, build.stderr[-3000:]
  (wheel,) = wheels.glob("taskmem_jax-*.whl")

  # A venv of its own; this environment's site-packages on its path for the dependencies only (a path line
  # in a .pth is not itself scanned for .pth files, so the editable install of the checkout stays out).
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = str(venv / "bin" / "python")
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
  with open(os.path.join(site, "dependencies.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                           text=True)
  assert install.returncode == 0, install.stderr[-3000:]

  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  env.update(JAX_PLATFORMS="cpu")
  run = subprocess.run([python, "-c", RUN_ONE_CONFIG], cwd=elsewhere, env=env, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-4000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result["package"].startswith(site), result["package"]  # the wheel's copy, not the checkout
  shipped = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "taskmem_jax", "configs"))
                   if f.endswith(".py") and f != "__init__.py")
  assert result["configs"] == shipped and "sft" in shipped
  assert result["phase_one_fields"] > 10 and result["loss"] > 0
  assert "model.safetensors" in result["export"] and "config.json" in result["export"]
