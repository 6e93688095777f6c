"""Flags for the absl launchers: every bad flag ends with one line on stderr and exit status 1.

absl reports a bad flag value itself (`parse_flags`), but ml_collections reads `--config.x=...`
overrides from sys.argv while the config flag is defined, and an unknown key (`--config.modle.x=1`)
raises there with a stack trace; `define_config_file` turns that into one line.
Use `CONFIG = launch.define_config_file(...)` and `app.run(main, flags_parser=launch.parse_flags)`.
"""
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
from typing import Dict, List

from absl import flags
from ml_collections import config_flags


def fail(message: str) -> None:
  """Prints `error: message` as one line on stderr and exits with status 1."""
  print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
  sys.exit(1)


def _fail_unknown_key(error: Exception, argv: List[str]) -> None:
  """One line for ml_collections' KeyError/AttributeError on an override of a missing key."""
  key = re.search(r'(\w+)', str(error))
  suggestion = re.search(r'Did you mean "(\w+)"', str(error))
  overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
  fail(f'unknown config key {key.group(1) if key else "?"!r} in {", ".join(overrides) or "a --config override"}'
       + (f' (did you mean {suggestion.group(1)!r}?)' if suggestion else ''))


def define_config_file(name: str, default: str, help_string: str):
  """config_flags.DEFINE_config_file; an override of a key the config lacks ends the program."""
  try:
    return config_flags.DEFINE_config_file(name, default, help_string)
  except (AttributeError, KeyError) as e:
    _fail_unknown_key(e, sys.argv)


def parse_flags(argv: List[str]) -> List[str]:
  """FLAGS(argv) -> the remaining arguments; a bad flag ends the program with one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e))
  except (AttributeError, KeyError) as e:  # a --config file given explicitly is loaded here
    _fail_unknown_key(e, argv)


def require_choices(flag: str, values, allowed) -> None:
  """Ends the program with one line unless every value of the list flag --flag is in allowed."""
  unknown = sorted(set(values) - set(allowed))
  if unknown:
    fail(f'--{flag}: unknown {unknown}; use any of {list(allowed)}')


def commit() -> str:
  """The checkout's commit (with '+changes' when the tree differs from it), or 'unknown'."""
  try:
    here = pathlib.Path(__file__).resolve().parent
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=here, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=here,
                           capture_output=True, text=True, check=True).stdout.strip()
    return head + ('+changes' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def provenance(program: str) -> Dict[str, str]:
  """What a results file records of how it was made: the command (program and this process's
  arguments), the commit, the machine and the date."""
  return dict(command=' '.join([program] + sys.argv[1:]), commit=commit(),
              machine=f'{platform.machine()} CPU, {os.cpu_count()} cores', date=datetime.date.today().isoformat())


def write_results(output: str, record: dict, markdown: str) -> str:
  """Writes record to <output>.json (arrays as lists) and markdown to <output>.md; returns 'wrote
  <json> and <md>'. The suffixes are appended: a name with a dot (estimators_prior_0.01) keeps it."""
  base = pathlib.Path(output)
  json_path, markdown_path = base.parent / f'{base.name}.json', base.parent / f'{base.name}.md'
  json_path.write_text(json.dumps(record, indent=1, default=lambda x: x.tolist()))
  markdown_path.write_text(markdown)
  return f'wrote {json_path} and {markdown_path}'
