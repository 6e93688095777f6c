"""Flags for the absl launchers: every bad flag ends with one line on stderr and exit status 1.

absl reports a bad flag value itself (`parse_flags`), but ml_collections reads `--config.x=...`
overrides from sys.argv while the config flag is defined, and an unknown key (`--config.modle.x=1`)
raises there with a stack trace; `define_config_file` turns that into one line.
Use `CONFIG = launch.define_config_file(...)` and `app.run(main, flags_parser=launch.parse_flags)`.
"""
import sys
from typing import List

from absl import flags
from ml_collections import config_flags


def fail(message: str) -> None:
  """Prints `error: message` as one line on stderr and exits with status 1."""
  print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
  sys.exit(1)


def define_config_file(name: str, default: str, help_string: str):
  """config_flags.DEFINE_config_file; an override of a key the config lacks ends the program."""
  try:
    return config_flags.DEFINE_config_file(name, default, help_string)
  except (AttributeError, KeyError) as e:
    key = str(e).strip('"\'')
    overrides = [a.split('=')[0] for a in sys.argv[1:] if a.startswith(f'--{name}.')]
    fail(f'unknown config key {key!r} in {", ".join(overrides) or f"a --{name} override"}')


def parse_flags(argv: List[str]) -> List[str]:
  """FLAGS(argv) -> the remaining arguments; a bad flag ends the program with one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e))
