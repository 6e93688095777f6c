"""pyproject.toml: dependencies as requirements.txt pins them, console commands that resolve and
answer --help, and a build that carries the package, its configs and the experiments."""
import concurrent.futures
import importlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests import helpers

PYPROJECT = tomllib.loads((helpers.REPO / 'pyproject.toml').read_text())
SCRIPTS = PYPROJECT['project']['scripts']
# A flag each command's --help must show (besides the first line of its docstring).
FLAG_IN_HELP = {
    'air-jax-train': '--workdir', 'air-jax-infer': '--images', 'air-jax-visualize': '--output',
    'air-jax-evaluate': '--num_samples',
    'air-jax-benchmark': '--batch_sizes', 'air-jax-strong-generalization': '--seeds',
    'air-jax-downstream': '--workdir', 'air-jax-curves': '--thresholds', 'air-jax-build-dataset': '--counts',
}


def requirement_lines():
  lines = (line.split('#')[0].strip() for line in (helpers.REPO / 'requirements.txt').read_text().splitlines())
  return [line for line in lines if line]


def test_dependencies_are_the_requirements_pins():
  project = PYPROJECT['project']
  assert project['name'] == 'air-jax'
  pins = requirement_lines()
  assert sorted(project['dependencies'] + project['optional-dependencies']['test']) == sorted(pins)
  assert project['optional-dependencies']['test'] == [p for p in pins if p.startswith(('pytest==', 'pytest-xdist=='))]
  assert any(p.startswith('pillow==') for p in project['dependencies'])


def test_every_command_is_listed_and_resolves():
  assert set(SCRIPTS) == set(FLAG_IN_HELP)
  for name, target in SCRIPTS.items():
    module, attribute = target.split(':')
    assert callable(getattr(importlib.import_module(module), attribute)), name


def test_experiment_commands_find_their_scripts():
  from air_jax import cli
  for name in ('train', 'benchmark', 'strong_generalization', 'downstream', 'curves'):
    assert cli.experiment_path(name) == helpers.REPO / 'experiments' / f'{name}.py'


def help_of(name):
  module, attribute = SCRIPTS[name].split(':')
  code = f'import sys; sys.argv[0] = {name!r}; import {module}; {module}.{attribute}()'
  return subprocess.run([sys.executable, '-c', code, '--help'], cwd=helpers.REPO, env=helpers.subprocess_env(),
                        capture_output=True, text=True, timeout=300)


def test_every_command_answers_help():
  """--help prints the launcher's docstring and flags (absl exits 1 after --help, argparse 0)."""
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    processes = dict(zip(SCRIPTS, pool.map(help_of, SCRIPTS)))
  for name, process in processes.items():
    assert process.returncode in (0, 1), (name, process.stderr)
    assert 'Traceback' not in process.stderr, (name, process.stderr)
    assert FLAG_IN_HELP[name] in process.stdout, (name, process.stdout)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """(lib folder, entry_points.txt) of the wheel `pip wheel` builds from a copy of the sources,
  unpacked. pip builds in an isolated environment with the setuptools that pyproject.toml's
  build-system asks for, fetched from the package index: the test process never imports setuptools,
  so this runs where the venv has none (Python 3.12's venvs)."""
  source = tmp_path_factory.mktemp('source')  # pip builds in the tree: keep build/, *.egg-info out of it
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(helpers.REPO / name, source / name)
  for name in ('air_jax', 'experiments'):
    shutil.copytree(helpers.REPO / name, source / name, ignore=shutil.ignore_patterns('__pycache__'))
  out = tmp_path_factory.mktemp('built')
  process = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--disable-pip-version-check', '-q',
                            '-w', str(out / 'dist'), str(source)],
                           cwd=out, capture_output=True, text=True, timeout=300)
  assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-3000:]
  (wheel,) = (out / 'dist').glob('air_jax-0.1.0-*.whl')
  with zipfile.ZipFile(wheel) as archive:
    archive.extractall(out / 'lib')
  (entry_points,) = (out / 'lib').glob('air_jax-0.1.0.dist-info/entry_points.txt')
  return out / 'lib', entry_points.read_text()


def test_build_holds_the_package_the_experiments_and_the_commands(built):
  lib, entry_points = built
  names = {p.relative_to(lib).as_posix() for p in lib.rglob('*.py')}
  for module in ('air_jax/cli.py', 'air_jax/visualize.py', 'air_jax/infer.py', 'air_jax/configs/multi_mnist.py',
                 'air_jax/data/tfds_builder.py'):
    assert module in names
  for script in (helpers.REPO / 'experiments').glob('*.py'):
    assert f'air_jax/experiments/{script.name}' in names
  assert not any(n.startswith('tests/') for n in names)
  for sample in ('images_background_small1.zip', 'images_background_small2.zip', 'LICENSE'):
    assert (lib / 'air_jax' / 'data' / 'omniglot_sample' / sample).is_file(), sample  # the embedded default
  for name, target in SCRIPTS.items():
    assert f'{name} = {target}' in entry_points


def test_installed_layout_runs_an_experiment_command(built, tmp_path):
  """From the built package alone (no checkout on the path): air-jax-train finds its script in
  air_jax/experiments and its default config in air_jax/configs."""
  lib, _ = built
  env = dict(helpers.subprocess_env(), PYTHONPATH=str(lib))
  code = "import sys; sys.argv[0] = 'air-jax-train'; from air_jax import cli; cli.train()"
  process = subprocess.run([sys.executable, '-c', code, '--helpfull'], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
  assert process.returncode in (0, 1) and 'Traceback' not in process.stderr, process.stderr
  text = ''.join(process.stdout.split())  # absl wraps long lines
  assert f"{lib / 'air_jax' / 'experiments' / 'train.py'}:" in text  # its flags' section
  assert f"(default:'{lib / 'air_jax' / 'configs' / 'multi_mnist.py'}')" in text  # --config
