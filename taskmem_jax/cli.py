"""Start-up of the command-line entry points (experiments/*.py): the user sees our output, not the runtime's.

Without it every entry point opens with absl INFO lines and, where libtpu is installed but no TPU is
attached (the CPU hosts that compile for TPUs ahead of time), XLA's "Unable to initialize backend 'tpu'"
and libtpu's worker-discovery warnings. `run(main)` is absl's app.run(main) with:
- on a host with neither a TPU chip nor an NVIDIA device, and no platform chosen (JAX_PLATFORMS), JAX
  told to use the CPU, so libtpu is never started just to find no chip;
- libtpu's own logging at errors only (TPU_MIN_LOG_LEVEL / TPU_STDERR_LOG_LEVEL, unless already set);
- absl and JAX's loggers at WARNING, unless --verbosity (or -v) is given on the command line.
Warnings and errors still show.
"""

from __future__ import annotations

import glob
import logging as std_logging
import os
from typing import Callable

import jax
from absl import app, flags, logging
from jax._src import hardware_utils  # what jax itself uses to count the host's TPU chips

# libtpu reads these when it initialises (the first device query), after main has started.
LIBTPU_QUIET = {"TPU_MIN_LOG_LEVEL": "3", "TPU_STDERR_LOG_LEVEL": "3"}


def quiet_startup() -> None:
  """Runtime chatter off (see the module docstring); call before the first device query."""
  for name, value in LIBTPU_QUIET.items():
    os.environ.setdefault(name, value)
  if not jax.config.jax_platforms and not accelerators():
    jax.config.update("jax_platforms", "cpu")
  if not (flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present):
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("jax").setLevel(std_logging.WARNING)


def accelerators() -> bool:
  """Whether the host has a TPU chip or an NVIDIA device."""
  return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0 or bool(glob.glob("/dev/nvidia[0-9]*"))


def run(main: Callable[[list[str]], None]) -> None:
  """absl.app.run(main) after quiet_startup."""

  def quiet_main(argv):
    quiet_startup()
    return main(argv)

  app.run(quiet_main)
