"""Our import names do not collide with other projects' (issue: Hugging Face's `kernels`, which transformers
imports when installed, and PyPI's `experiments`).

- The kernels import as taskmem_jax.kernels. With Hugging Face's `kernels` installed beside us (the test extra
  installs it), transformers' Qwen3-VL and our Pallas attention import from the repository root and from
  another directory (from the root, our attention also runs), and `import kernels` is theirs in both.
- experiments/ is not installed: from another directory `import experiments` finds another project's package
  (here a stand-in on PYTHONPATH) or nothing, never ours; from the root, `python -m experiments.X` is ours.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.multiprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK_KERNELS = textwrap.dedent("""
    import jax.numpy as jnp, numpy as np
    from transformers import Qwen3VLForConditionalGeneration  # imports HF's kernels when it is installed
    import kernels
    assert "site-packages" in kernels.__file__, kernels.__file__
    assert hasattr(kernels, "get_kernel"), "not Hugging Face's kernels"
    from taskmem_jax.kernels.flash_attention import flash_attention, reference
    import sys
    if sys.argv[1:] == ["import-only"]:
      print("ok")
      raise SystemExit
    q = jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, 2, 16)), jnp.float32)
    out = flash_attention(q, q, q, causal=True, impl="pallas", interpret=True)
    np.testing.assert_allclose(out, reference.attention(q, q, q, causal=True), atol=1e-5)
    print("ok")
""")


@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_hf_kernels_beside_ours(where, tmp_path):
  pytest.importorskip("kernels", reason="Hugging Face's kernels (test extra)")
  cwd = ROOT if where == "root" else str(tmp_path)
  # From the root the kernel also runs (the import that matters found our module); elsewhere importing is the check.
  args = [] if where == "root" else ["import-only"]
  proc = subprocess.run([sys.executable, "-c", CHECK_KERNELS, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_experiments_is_not_installed(tmp_path):
  other = tmp_path / "site" / "experiments"
  other.mkdir(parents=True)
  (other / "__init__.py").write_text("OWNER = 'another project'\n")
  env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), JAX_PLATFORMS="cpu")
  probe = "import experiments; print(getattr(experiments, 'OWNER', experiments.__file__))"
  elsewhere = subprocess.run([sys.executable, "-c", probe], cwd=str(tmp_path), env=env, capture_output=True,
                             text=True, timeout=120)
  assert elsewhere.stdout.strip() == "another project", elsewhere.stdout + elsewhere.stderr
  root = subprocess.run([sys.executable, "-m", "experiments.plan", "--preset=tiny", "--devices=1"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert root.returncode == 0 and "Phase One" in root.stdout, root.stderr[-2000:]
