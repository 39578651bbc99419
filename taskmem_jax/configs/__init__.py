"""The experiments' ml_collections configs, one file per run (get_config(), some with variants: "demo",
...). They ship with the package, so an installed wheel has them; the absl entry points in experiments/
read them as files (--config=taskmem_jax/configs/NAME.py, --config.FIELD=VALUE to override a field)."""

import os

DIR = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The file of config `name` (for config_flags.DEFINE_config_file)."""
  return os.path.join(DIR, f"{name}.py")
