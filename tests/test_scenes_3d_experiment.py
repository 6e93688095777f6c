"""experiments/scenes_3d.py --smoke end to end: the symmetric supervised CNN on one object and DAIR
on 0-3 objects (the other runs differ from these by a flag or two: AIR on one object is the DAIR
run's training path, tested in test_scenes_3d) train, are scored on held-out scenes, and land in
the table, the JSON and the picture; a second call reuses the finished runs."""
import json
import subprocess
import sys

import numpy as np

from tests import helpers

RUNS = ('one_object_cnn_symmetric', 'counts_dair')


def test_smoke_mode_end_to_end(tmp_path):
  root = tmp_path / 's3'
  command = [sys.executable, 'experiments/scenes_3d.py', f'--workdir={root}', '--smoke',
             f'--data_dir={tmp_path / "data"}', f'--runs={",".join(RUNS)}']
  run = subprocess.run(command, cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True,
                       text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((root / 'scenes_3d.json').read_text())
  assert list(results) == list(RUNS)
  for name, result in results.items():
    assert 0.0 <= result['count_accuracy'] <= 1.0 and 0.0 <= result['identity_accuracy'] <= 1.0, name
    assert np.isfinite(result['position_error']) and result['rerender_mse'] >= 0.0, name
    assert result['num_eval'] == 8 and result['objects'] > 0, name
  assert results['one_object_cnn_symmetric']['objects'] == 8  # one object per held-out scene
  table = (root / 'scenes_3d.md').read_text()
  assert table.startswith('| run | count acc. |') and all(f'| {name} |' in table for name in RUNS)
  assert (root / 'scenes_3d.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert 'wrote' in run.stdout and 'counts_dair' in run.stdout

  again = subprocess.run(command, cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True,
                         text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert '== ' not in again.stdout  # nothing retrained
  assert json.loads((root / 'scenes_3d.json').read_text()) == results
