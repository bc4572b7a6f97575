"""Sweeps handed damaged or odd records: one clear error naming the file, a warning for metrics that
are not finite, and what main would refuse refused when the sweep is planned."""

import json
import math
import os
import re

import pytest

from tests.conftest import REPO
from vivano_jax import sweep as sweep_lib

TINY = str(REPO / 'configs' / 'tiny.py')


def _run(root, name, config=None, metrics=None):
  os.makedirs(root / name, exist_ok=True)
  if config is not None:
    (root / name / 'config.json').write_text(json.dumps(config))
  if metrics is not None:
    (root / name / 'metrics.json').write_text(
        metrics if isinstance(metrics, str) else json.dumps(metrics))


def _metrics(auroc, au_pro=0.5):
  return {'metrics': {'overall': {'image_auroc': auroc, 'pixel_auroc': 0.5, 'au_pro': au_pro}}}


@pytest.mark.parametrize('file, text, match', [
    ('run_a/metrics.json', '[1, 2]', 'not a JSON object'),
    ('run_a/metrics.json', '{"metrics": {"overall": null}}', "no 'overall' object"),
    ('run_a/metrics.json', '{"metrics": [1]}', "no 'overall' object"),
    ('run_a/metrics.json', '{"metrics": {"overall": {"au_pro": "high"}}}',
     "au_pro is 'high', not a number"),
    ('run_a/metrics.json', '{"train_images_per_sec": true}', 'train_images_per_sec is True'),
    ('run_a/config.json', '[1]', 'not a JSON object'),
    ('run_a/config.json', '{"train": 5}', "section 'train' is not an object"),
    ('run_a/sweep_run.json', '[1]', 'not a JSON object'),
    ('run_a/sweep_run.json', '{"flags": [1]}', "'flags' of run run_a is not an object"),
    ('sweep.json', '{"fields": [], "runs": [{"flags": {}}]}', r'runs\[0\] has no name'),
    ('sweep.json', '{"fields": [], "runs": {}}', "'runs' is not a list"),
    ('sweep.json', '{"fields": "seed", "runs": []}', "'fields' is not a list"),
    ('sweep.json', '{"runs": [{"name": "run_a", "overrides": 3}]}',
     "'overrides' of run run_a is not an object"),
])
def test_damaged_records_are_one_error_naming_the_file(tmp_path, capsys, file, text, match):
  root = tmp_path / 'root'
  _run(root, 'run_a', {'seed': 0}, _metrics(0.9))
  _run(root, 'run_b', {'seed': 1}, _metrics(0.8))
  (root / file).write_text(text)
  assert sweep_lib.main(['gather', f'--root={root}', '--over=seed']) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert str(root / file) in err
  assert re.search(match, err), err


def test_metrics_that_are_not_finite_are_kept_warned_and_left_out_of_the_plot(tmp_path, capsys):
  root = tmp_path / 'root'
  for seed, auroc in enumerate((0.9, math.nan, 0.8)):
    _run(root, f'batch_size=16,seed={seed}', {'seed': seed, 'train': {'batch_size': 16}},
         _metrics(auroc))
  for seed in (0, 1):
    _run(root, f'batch_size=64,seed={seed}', {'seed': seed, 'train': {'batch_size': 64}},
         _metrics(0.7 + 0.1 * seed, au_pro=0.4))
  assert sweep_lib.main(['gather', f'--root={root}', '--over=seed']) == 0
  captured = capsys.readouterr()
  assert captured.err == ('warning: batch_size=16,seed=1: image_auroc=nan (kept: means over its '
                          'group are NaN too)\n')
  assert '| batch_size=16 | 16 | 3 | 0,1,2 | nan ± nan |' in captured.out  # Not over two seeds.
  assert '| batch_size=64 | 64 | 2 | 0,1 | 0.750 ± 0.071 |' in captured.out
  output = tmp_path / 'plot.png'
  assert sweep_lib.main(['plot', f'--root={root}', '--x=train.batch_size',
                         f'--output={output}']) == 0
  captured = capsys.readouterr()
  assert captured.err == ('warning: group batch_size=16: image_auroc is not finite; left out of '
                          'the plot\n')
  assert output.is_file()
  # Only the AU-PRO panel would have the group: asked for AU-PRO alone, it is drawn, no warning.
  assert sweep_lib.main(['plot', f'--root={root}', '--x=train.batch_size', '--metrics=au_pro',
                         f'--output={output}']) == 0
  assert capsys.readouterr().err == ''


def test_plot_flags_that_name_nothing_drawable_are_usage_errors(tmp_path, capsys):
  root = tmp_path / 'root'
  for batch in (16, 64):
    for seed in (0, 1):
      _run(root, f'batch_size={batch},seed={seed}', {'seed': seed, 'train': {'batch_size': batch}},
           _metrics(0.9))
  assert sweep_lib.main(['gather', f'--root={root}', '--over=seed']) == 0
  capsys.readouterr()
  (tmp_path / 'out').mkdir()
  for flag, message in ((f'--output={tmp_path / "out"}', "is a folder; give the plot's path"),
                        ('--metrics=', 'name at least one of image_auroc'),
                        ('--metrics=,', 'name at least one of image_auroc')):
    args = ['plot', f'--root={root}', '--x=train.batch_size', f'--output={tmp_path / "p.png"}',
            flag]
    assert sweep_lib.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and err.count('\n') == 1, err
  assert os.listdir(tmp_path / 'out') == [] and not (tmp_path / 'p.png').exists()


@pytest.mark.parametrize('runs, match', [
    ("grid={'train.num_steps': [10, -5]}",
     'run num_steps=-5: train.num_steps must be an int >= 0'),
    ("grid={'train.learning_rate': [0.0]}", 'train.learning_rate must be a finite number > 0'),
    ("runs=[{'score.image': 'seg_max'}]", "score.image='seg_max': read the segmenter's map"),
    ("runs=[{'train.synthetic_anomalies': 2.0}]", 'train.synthetic_anomalies must be a finite '
     'number >= 0 and <= 1'),
    ("runs=[{'model.depth': 0}]", 'model.depth must be a positive int'),
    ('runs=[]', 'runs is empty'),
])
def test_the_plan_refuses_what_main_would_refuse(tmp_path, capsys, runs, match):
  path = tmp_path / 'sweep.py'
  path.write_text(f'def get_sweep():\n  return dict(base_config={TINY!r}, {runs})\n')
  root = tmp_path / 'root'
  assert sweep_lib.main(['run', f'--sweep={path}', f'--root={root}', '--dry_run']) == 2
  err = capsys.readouterr().err
  assert err.startswith(f'error: {path}: ') and match in err and err.count('\n') == 1, err
  assert not root.exists()


def test_a_root_that_is_a_file_is_a_usage_error(tmp_path, capsys):
  path = tmp_path / 'sweep.py'
  path.write_text(f"def get_sweep():\n  return dict(base_config={TINY!r}, grid={{'seed': [1]}})\n")
  root = tmp_path / 'root.txt'
  root.write_text('x')
  assert sweep_lib.main(['run', f'--sweep={path}', f'--root={root}', '--dry_run']) == 2
  assert f'--root={root}: is a file, not a folder' in capsys.readouterr().err
  assert root.read_text() == 'x'
