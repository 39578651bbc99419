"""What each notebook's first cell runs in Colab once it has cloned the repository into ./taskmem-jax:
install the project with the extra that matches the runtime, and make this kernel import it from there.

Run with exec() from the notebook (the project is not importable yet, so this file cannot be imported as
part of it). A runtime where taskmem_jax is already importable (a local checkout, CI) never gets here.
"""

import os
import subprocess
import sys


def runtime_extra(environ=os.environ, exists=os.path.exists) -> str:
  """The setup.cfg extra for this runtime: "tpu" (Colab sets COLAB_TPU_ADDR; TPU VMs have /dev/accel0),
  "gpu" (an NVIDIA device), or "" (CPU)."""
  if "COLAB_TPU_ADDR" in environ or exists("/dev/accel0"):
    return "tpu"
  if exists("/dev/nvidia0"):
    return "gpu"
  return ""


def install(checkout: str = "taskmem-jax", run=subprocess.run) -> list[str]:
  """pip install -e CHECKOUT[extra], then the checkout becomes the working directory and the first entry of
  sys.path (this kernel started before the install, so it would not see the editable package; the notebooks
  also import experiments/ from the root). Returns the pip command."""
  extra = runtime_extra()
  command = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{checkout}[{extra}]" if extra else checkout]
  run(command, check=True)
  os.chdir(checkout)
  sys.path.insert(0, os.getcwd())
  return command


if __name__ == "__main__":  # exec() from a notebook cell runs as __main__
  install()
