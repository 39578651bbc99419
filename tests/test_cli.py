"""Entry points start quietly (taskmem_jax/cli.py): our output, then the runtime's warnings and errors only.

Here libtpu is installed (the test extra) and no TPU is attached, so the first device query makes XLA log
"Unable to initialize backend 'tpu'" and libtpu print its worker-discovery warnings: what every entry
point used to open with. The same program under plain absl.app.run is the control.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.multiprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = textwrap.dedent("""
    import sys
    from absl import app
    from taskmem_jax import cli

    def main(argv):
      import jax
      from absl import logging
      print("ours:", jax.devices()[0].platform, jax.config.jax_platforms, logging.get_verbosity())

    (cli.run if sys.argv[1] == "cli" else app.run)(main, *[] if sys.argv[1] == "cli" else [sys.argv[:1]])
""")

NOISE = ("Unable to initialize backend", "libtpu", "TPU_WORKER_HOSTNAMES", "xla_bridge")


def start(how: str, *flags: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TPU_MIN_LOG_LEVEL",
                                                          "TPU_STDERR_LOG_LEVEL")}
  return subprocess.run([sys.executable, "-c", PROGRAM, how, *flags], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=env)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu (the test extra)")
def test_entry_points_start_without_runtime_noise():
  quiet = start("cli")
  assert quiet.returncode == 0, quiet.stderr[-2000:]
  # No TPU chip or GPU here: JAX is pointed at the CPU, so libtpu never starts (whoever holds its lock).
  assert quiet.stdout.strip() == "ours: cpu cpu -1"  # -1: absl at WARNING
  assert not [line for line in quiet.stderr.splitlines() if any(n in line for n in NOISE)], quiet.stderr
  # The control: plain absl start-up shows the backend probe.
  loud = start("app")
  assert loud.returncode == 0 and "Unable to initialize backend" in loud.stderr, loud.stderr[-2000:]
  # Asked for on the command line, INFO comes back.
  verbose = start("cli", "--verbosity=0")
  assert verbose.returncode == 0 and verbose.stdout.strip() == "ours: cpu cpu 0", verbose.stderr[-2000:]
