"""Console commands of `pip install .` (pyproject.toml [project.scripts]). Each runs one launcher
as its own main program, exactly as the command beside it does, with the same flags:

    air-jax-train                  python experiments/train.py
    air-jax-infer                  python -m air_jax.infer
    air-jax-evaluate               python -m air_jax.evaluate
    air-jax-visualize              python -m air_jax.visualize
    air-jax-benchmark              python experiments/benchmark.py
    air-jax-strong-generalization  python experiments/strong_generalization.py
    air-jax-downstream             python experiments/downstream.py
    air-jax-curves                 python experiments/curves.py
    air-jax-build-dataset          python -m air_jax.data.tfds_builder

The experiments/ scripts stay scripts in the checkout; the wheel carries them as
air_jax/experiments/ (pyproject maps the folder there). A checkout that is not installed runs them
from <repo>/experiments.
"""
import importlib.util
import pathlib
import runpy
import sys

REPO_EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / 'experiments'


def experiment_path(name: str) -> pathlib.Path:
  """experiments/<name>.py: in the installed package air_jax.experiments, else in the checkout."""
  try:
    spec = importlib.util.find_spec('air_jax.experiments')
  except ModuleNotFoundError:
    spec = None
  folders = list(spec.submodule_search_locations or []) if spec is not None else []
  for folder in [pathlib.Path(f) for f in folders] + [REPO_EXPERIMENTS]:
    if (folder / f'{name}.py').is_file():
      return folder / f'{name}.py'
  print(f'error: the experiment {name!r} is not in this installation (no {name}.py in '
        f'{", ".join(map(str, folders + [REPO_EXPERIMENTS]))})', file=sys.stderr)
  sys.exit(1)


def run_experiment(name: str) -> None:
  """python experiments/<name>.py with this command's arguments."""
  runpy.run_path(str(experiment_path(name)), run_name='__main__')


def run_module(module: str) -> None:
  """python -m <module> with this command's arguments."""
  runpy.run_module(module, run_name='__main__', alter_sys=True)


def train() -> None:
  run_experiment('train')


def benchmark() -> None:
  run_experiment('benchmark')


def strong_generalization() -> None:
  run_experiment('strong_generalization')


def downstream() -> None:
  run_experiment('downstream')


def curves() -> None:
  run_experiment('curves')


def infer() -> None:
  run_module('air_jax.infer')


def evaluate() -> None:
  run_module('air_jax.evaluate')


def visualize() -> None:
  run_module('air_jax.visualize')


def build_dataset() -> None:
  run_module('air_jax.data.tfds_builder')
