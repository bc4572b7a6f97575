"""Sweeps: expansion, the learning-rate rule as config fields, run names, restart, gather, errors,
the sweep files of sweeps/, one real sweep."""

import csv
import json
import math
import os
import pathlib
import re
import shutil
import statistics
import sys
import textwrap

import pytest

from tests.conftest import REPO, disk_full_open, load_config
from vivano_jax import atomic_files
from vivano_jax import sweep as sweep_lib

TINY = str(REPO / 'configs' / 'tiny.py')


def _sweep_file(tmp_path, body: str, name: str = 'sweep.py') -> str:
  path = tmp_path / name
  path.write_text('import ml_collections\n\n' + textwrap.dedent(body))
  return str(path)


def _grid_sweep(tmp_path, grid: str, extra: str = '', name: str = 'sweep.py') -> str:
  return _sweep_file(tmp_path, f"""
      def get_sweep():
        return dict(base_config={TINY!r}, grid={grid}{extra})
      """, name)


# --------------------------------------------------------------------------------------------------
# Expansion and scaling.


def test_expand_grid_is_the_cartesian_product_in_order():
  runs = sweep_lib.expand_grid({'a.x': [1, 2], 'b.y': ['p', 'q', 'r']})
  assert runs == [{'a.x': 1, 'b.y': 'p'}, {'a.x': 1, 'b.y': 'q'}, {'a.x': 1, 'b.y': 'r'},
                  {'a.x': 2, 'b.y': 'p'}, {'a.x': 2, 'b.y': 'q'}, {'a.x': 2, 'b.y': 'r'}]
  with pytest.raises(ValueError, match="'a.x' must be a non-empty list"):
    sweep_lib.expand_grid({'a.x': 3})


def test_load_sweep_grid_nested_configdict_and_explicit_list(tmp_path):
  nested = _sweep_file(tmp_path, f"""
      def get_sweep():
        s = ml_collections.ConfigDict()
        s.base_config = {TINY!r}
        s.grid = {{'model': {{'depth': [1, 2]}}, 'train': {{'batch_size': [8, 16, 32]}}}}
        s.fixed = {{'train': {{'num_steps': 3}}}}
        return s
      """, 'nested.py')
  sweep = sweep_lib.load_sweep(nested)
  assert sweep.fields == ['model.depth', 'train.batch_size']
  assert [r.overrides for r in sweep.runs] == [
      {'model.depth': d, 'train.batch_size': b} for d in (1, 2) for b in (8, 16, 32)]
  assert all(r.flags['train.num_steps'] == 3 for r in sweep.runs)
  assert sweep.base_config == TINY and [r.index for r in sweep.runs] == list(range(6))

  listed = _sweep_file(tmp_path, f"""
      def get_sweep():
        return dict(base_config={TINY!r}, runs=[
            {{'model.encoder': 'cnn'}},
            {{'model.encoder': 'vit', 'model.variational': False}},
            {{'density': {{'condition': 'none'}}}},
        ])
      """, 'listed.py')
  sweep = sweep_lib.load_sweep(listed)
  assert [r.overrides for r in sweep.runs] == [
      {'model.encoder': 'cnn'}, {'model.encoder': 'vit', 'model.variational': False},
      {'density.condition': 'none'}]
  assert sweep.fields == ['model.encoder', 'model.variational', 'density.condition']


def test_the_scaling_rule_is_the_configs_and_the_plan_shows_its_rates(tmp_path, capsys):
  # train.lr_scaling / base_batch_size are config fields: the runs get them as flags, main scales.
  path = _grid_sweep(tmp_path, "{'train.batch_size': [8, 32], 'train.learning_rate': [1e-3, 2e-3]}",
                     ", fixed={'train.lr_scaling': 'sqrt', 'train.base_batch_size': 16}")
  sweep = sweep_lib.load_sweep(path)
  assert [r.name for r in sweep.runs][:2] == ['batch_size=8,learning_rate=0.001',
                                              'batch_size=8,learning_rate=0.002']
  s = math.sqrt(2.0)
  for r in sweep.runs:
    b, lr = r.overrides['train.batch_size'], r.overrides['train.learning_rate']
    # The flags carry the rate at B0 as the sweep gives it; no rate is computed into them.
    assert r.flags == {'train.lr_scaling': 'sqrt', 'train.base_batch_size': 16,
                       'train.batch_size': b, 'train.learning_rate': lr}
    # tiny: 5 warmup steps at batch 16 -> ceil(5 * 16 / 8) = 10 at batch 8, ceil(2.5) = 3 at 32.
    assert r.effective['learning_rate'] == pytest.approx(lr * (s if b == 32 else 1 / s), rel=1e-12)
    assert r.effective['warmup_steps'] == (10 if b == 8 else 3)
  # --dry_run shows the rates; --count prints the number of runs only.
  root = str(tmp_path / 'root')
  assert sweep_lib.main(['run', f'--sweep={path}', f'--root={root}', '--dry_run']) == 0
  out = capsys.readouterr().out
  assert ('[4/4] run 3 batch_size=32,learning_rate=0.002: learning rate 0.002828, warmup 3 steps'
          in out)
  assert '--config.train.lr_scaling=sqrt --config.train.base_batch_size=16' in out
  assert sweep_lib.main(['run', f'--sweep={path}', f'--root={root}', '--count']) == 0
  assert capsys.readouterr().out == '4\n' and not os.path.exists(root)

  # The rule swept itself; the base config's rate (tiny: 1e-3) at B0 = 16.
  path = _grid_sweep(tmp_path,
                     "{'train.lr_scaling': ['none', 'linear'], 'train.batch_size': [8, 64]}",
                     ", fixed={'train.base_batch_size': 16}", 'rules.py')
  runs = sweep_lib.load_sweep(path).runs
  assert [r.effective['learning_rate'] for r in runs] == pytest.approx([1e-3, 1e-3, 5e-4, 4e-3],
                                                                     rel=1e-12)
  assert [r.name for r in runs][2] == 'lr_scaling=linear,batch_size=8'


def test_run_names_are_readable_and_unique():
  names = sweep_lib.run_names([{'train.batch_size': 16, 'train.learning_rate': 0.001},
                               {'train.batch_size': 16, 'train.learning_rate': 1e-05}])
  assert names == ['batch_size=16,learning_rate=0.001', 'batch_size=16,learning_rate=1e-05']
  # Two fields with the same last part are named by their full paths.
  names = sweep_lib.run_names([{'model.depth': 1, 'density.depth': 2}])
  assert names == ['model.depth=1,density.depth=2']
  # Values that clean to the same text ('/' is not allowed in a folder name) get hash suffixes.
  names = sweep_lib.run_names([{'dataset.name': 'textures/brick'},
                               {'dataset.name': 'textures_brick'}])
  assert len(set(names)) == 2 and all(n.startswith('name=textures_brick-') for n in names)
  assert all('/' not in n and ' ' not in n for n in names)
  # Over-long names are cut, and stay unique.
  long = [{f'model.f{i}': 'x' * 30 for i in range(8)} | {'seed': s} for s in range(3)]
  names = sweep_lib.run_names(long)
  assert len(set(names)) == 3 and max(map(len, names)) <= sweep_lib.MAX_NAME_LENGTH
  assert sweep_lib.run_names([{}]) == ['base']


def test_tuple_values_reach_the_config_as_tuples(monkeypatch):
  """A swept tuple of strings is written so that ml_collections reads it back as that tuple (an
  unquoted `(a, b)` would be the one string '(a, b)'), numbers stay numbers; run names show it
  without quotes."""
  from absl import flags
  from ml_collections import config_flags
  values = {'train.synthetic_kinds': ('shift', 'move'), 'train.synthetic_area': (0.002, 0.25),
            'score.combine': ('seg',), 'dataset.name': 'textures/brick'}
  argv = ['main', f'--config={TINY}'] + [
      f'--config.{k}={sweep_lib.format_value(v)}' for k, v in values.items()]
  monkeypatch.setattr(sys, 'argv', argv)  # ml_collections reads its overrides from sys.argv.
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=fv)
  fv(argv)
  config = fv['config'].value
  assert config.train.synthetic_kinds == ('shift', 'move')
  assert config.train.synthetic_area == (0.002, 0.25)
  assert config.score.combine == ('seg',) and config.dataset.name == 'textures/brick'
  assert sweep_lib.run_names([{'train.synthetic_kinds': ('shift', 'move')}]) == [
      'synthetic_kinds=_shift__move_']


def test_command_line_fields_reach_the_runs_that_do_not_set_them(tmp_path):
  # A run's own value wins over the command line's, which wins over `fixed` (mixed sweeps need it).
  path = _sweep_file(tmp_path, f"""
      def get_sweep():
        return dict(base_config={TINY!r}, fixed={{'train.num_steps': 3, 'dataset.data_dir': 'a'}},
                    runs=[{{'dataset.name': 'digits/1', 'dataset.manual_dir': ''}},
                          {{'dataset.name': 'digits/2'}}])
      """)
  plain = sweep_lib.load_sweep(path)
  sweep = sweep_lib.load_sweep(path, {'dataset.manual_dir': '/data/tile',
                                      'dataset.data_dir': 'b', 'train.num_steps': '7'})
  assert [r.name for r in sweep.runs] == [r.name for r in plain.runs] == [
      'name=digits_1,manual_dir=', 'name=digits_2']
  # The number typed like the field; manual_dir only where the run does not set it.
  assert [r.flags for r in sweep.runs] == [
      {'train.num_steps': 7, 'dataset.data_dir': 'b', 'dataset.manual_dir': m,
       'dataset.name': f'digits/{d}'} for m, d in (('', 1), ('/data/tile', 2))]
  # Set by every run, the command line's value would do nothing: an error.
  with pytest.raises(sweep_lib.SweepError, match="'dataset.name' is swept and also set in the c"):
    sweep_lib.load_sweep(path, {'dataset.name': 'digits/3'})
  with pytest.raises(sweep_lib.SweepError,
                     match=r"--config\.train\.num_steps=many: train\.num_steps takes a whole num"):
    sweep_lib.load_sweep(path, {'train.num_steps': 'many'})


# --------------------------------------------------------------------------------------------------
# Running (with a fake main) and restarting.

# Stands in for `python -m vivano_jax.main`: records its argv and writes metrics.json.
FAKE_MAIN = textwrap.dedent("""
    import json, os, sys
    args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
    workdir = args['workdir']
    with open(os.path.join(os.path.dirname(workdir), 'calls.txt'), 'a') as f:
      f.write(os.path.basename(workdir) + '\\n')
    if args.get('config.model.depth') == '3':
      sys.exit('boom')
    with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
      json.dump({'metrics': {'overall': {'image_auroc': 0.5}}}, f)
    """)


def test_finished_runs_are_skipped_on_restart(tmp_path, capsys):
  path = _grid_sweep(tmp_path, "{'model.depth': [1, 2, 3]}")
  sweep = sweep_lib.load_sweep(path)
  root = tmp_path / 'root'
  # Run 0 finished earlier.
  os.makedirs(root / 'depth=1')
  (root / 'depth=1' / 'metrics.json').write_text('{}')
  launcher = [sys.executable, '-c', FAKE_MAIN]
  status = sweep_lib.run_sweep(sweep, str(root), launcher=launcher)
  assert status == {'depth=1': 'skipped', 'depth=2': 'done', 'depth=3': 'failed'}
  assert (root / 'calls.txt').read_text().split() == ['depth=2', 'depth=3']
  out = capsys.readouterr().out
  assert 'FAILED (exit code 1)' in out and 'boom' in out  # The failed run's log tail.
  record = json.loads((root / 'depth=2' / 'sweep_run.json').read_text())
  assert record['flags'] == {'model.depth': 2} and '--config.model.depth=2' in record['command']
  plan = json.loads((root / 'sweep.json').read_text())
  assert [r['name'] for r in plan['runs']] == ['depth=1', 'depth=2', 'depth=3']

  # Restart: only the failed run is tried again; --only selects by index.
  status = sweep_lib.run_sweep(sweep, str(root), launcher=launcher)
  assert status == {'depth=1': 'skipped', 'depth=2': 'skipped', 'depth=3': 'failed'}
  status = sweep_lib.run_sweep(sweep, str(root), only=[1], launcher=launcher)
  assert status == {'depth=2': 'skipped'}
  assert (root / 'calls.txt').read_text().split() == ['depth=2', 'depth=3', 'depth=3']

  # --print_commands: one line per unfinished run, with the launcher given.
  capsys.readouterr()
  sweep_lib.print_commands(sweep, str(root), launcher=['launch/multihost.sh'])
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 1 and lines[0].startswith('launch/multihost.sh --config=')
  assert lines[0].endswith(f'--workdir={root}/depth=3 --config.model.depth=3')

  # The same root with other settings for an existing workdir is refused, naming the field.
  other = sweep_lib.load_sweep(path, {'train.num_steps': '5'})
  with pytest.raises(sweep_lib.SweepError, match=r"other settings .*train.num_steps"):
    sweep_lib.run_sweep(other, str(root), launcher=launcher, dry_run=True)


# --------------------------------------------------------------------------------------------------
# Gathering.


def _write_run(root, name, config, metrics=None):
  os.makedirs(root / name)
  (root / name / 'config.json').write_text(json.dumps(config))
  if metrics is not None:
    (root / name / 'metrics.json').write_text(json.dumps(metrics))


def test_gather_writes_csv_and_markdown_from_hand_written_runs(tmp_path, capsys):
  root = tmp_path / 'root'
  base = {'seed': 0, 'model': {'depth': 2, 'width': 32}, 'train': {'batch_size': 8,
                                                                  'learning_rate': 0.001}}
  cfg = lambda b, lr: base | {'train': {'batch_size': b, 'learning_rate': lr}}
  metrics = lambda i, p, a, t, s: {
      'metrics': {'overall': {'image_auroc': i, 'pixel_auroc': p, 'au_pro': a, 'num_images': 10},
                  'defect_a': {'image_auroc': 0.0}},
      'train_images_per_sec': t, 'score_images_per_sec': s, 'checkpoint_step': 10}
  _write_run(root, 'run_a', cfg(8, 0.001), metrics(0.9, 0.8, 0.7, 100.0, 1000.0))
  _write_run(root, 'run_b', cfg(16, 0.002), metrics(0.95, None, None, 150.5, None))
  _write_run(root, 'run_c', cfg(32, 0.004))  # Started, never finished.
  (root / 'scratch').mkdir()  # Not a run.
  (root / 'notes.txt').write_text('x')

  assert sweep_lib.main(['gather', f'--root={root}']) == 0
  printed = capsys.readouterr().out
  with open(root / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['run', 'status', 'train.batch_size', 'train.learning_rate',
                           'image_auroc', 'pixel_auroc', 'au_pro', 'train_images_per_sec',
                           'score_images_per_sec']
  assert [r['run'] for r in rows] == ['run_a', 'run_b', 'run_c']
  assert [r['status'] for r in rows] == ['done', 'done', 'missing']
  assert [r['train.batch_size'] for r in rows] == ['8', '16', '32']
  assert [float(r['train.learning_rate']) for r in rows] == [0.001, 0.002, 0.004]
  assert rows[0]['image_auroc'] == '0.9' and rows[0]['pixel_auroc'] == '0.8'
  assert rows[0]['au_pro'] == '0.7' and rows[0]['train_images_per_sec'] == '100.0'
  assert rows[1]['pixel_auroc'] == '' and rows[1]['score_images_per_sec'] == ''
  assert rows[2]['image_auroc'] == ''
  md = (root / 'results.md').read_text()
  assert md == printed
  assert '| run | status | train.batch_size | train.learning_rate | image AUROC |' in md
  assert '| run_a | done | 8 | 0.001 | 0.9000 | 0.8000 | 0.7000 | 100.0 | 1000.0 |' in md
  assert 'missing (1 of 3, no metrics.json): run_c' in md


def test_gather_on_a_full_disk_keeps_the_earlier_tables_whole(tmp_path, capsys, monkeypatch):
  """results.csv was written in place: a full disk left a table cut short, which plot draws as
  fewer points without a word."""
  root = tmp_path / 'root'
  for seed in range(3):
    _write_run(root, f'seed={seed}', {'seed': seed}, {'metrics': {'overall': {
        'image_auroc': 0.9 + seed / 100}}})
  assert sweep_lib.main(['gather', f'--root={root}', '--over=seed']) == 0
  before = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
  assert sorted(before) == ['results.csv', 'results.md', 'results_over_seed.csv',
                            'results_over_seed.md']
  _write_run(root, 'seed=3', {'seed': 3}, {'metrics': {'overall': {'image_auroc': 0.5}}})
  capsys.readouterr()

  monkeypatch.setattr(atomic_files, 'open', disk_full_open, raising=False)
  assert sweep_lib.main(['gather', f'--root={root}', '--over=seed']) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'No space left on device' in err and err.count('\n') == 1
  assert {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()} == before


def test_gather_lists_planned_runs_that_never_started(tmp_path, capsys):
  path = _grid_sweep(tmp_path, "{'model.depth': [1, 2]}")
  sweep = sweep_lib.load_sweep(path)
  root = tmp_path / 'root'
  sweep_lib.write_plan(sweep, str(root))
  _write_run(root, 'depth=2', {'model': {'depth': 2}},
             {'metrics': {'overall': {'image_auroc': 0.6}}})
  columns, rows = sweep_lib.gather(str(root))
  assert columns[:3] == ['run', 'status', 'model.depth']
  assert [(r['run'], r['status'], r['model.depth']) for r in rows] == [
      ('depth=1', 'missing', 1), ('depth=2', 'done', 2)]


def test_gather_over_seed_pools_mean_and_sample_std(tmp_path, capsys):
  root = tmp_path / 'root'
  values = {('vit', 0): (0.90, 0.80, 0.70), ('vit', 1): (0.94, 0.86, 0.60),
            ('vit', 2): (0.95, 0.83, 0.65), ('cnn', 0): (0.99, 0.97, 0.91),
            ('cnn', 1): (0.97, 0.95, 0.90)}
  for encoder in ('vit', 'cnn'):
    for seed in (0, 1, 2):
      name = f'encoder={encoder},seed={seed}'
      cfg = {'seed': seed, 'model': {'encoder': encoder}}
      if (encoder, seed) in values:
        i, p, a = values[encoder, seed]
        _write_run(root, name, cfg, {
            'metrics': {'overall': {'image_auroc': i, 'pixel_auroc': p, 'au_pro': a}},
            'train_images_per_sec': 10.0 * (seed + 1)})
      else:  # Planned, never started: no config.json, only the planned flags; not pooled.
        os.makedirs(root / name)
        (root / name / 'sweep_run.json').write_text(json.dumps(
            {'flags': {'model.encoder': encoder, 'seed': seed},
             'overrides': {'model.encoder': encoder, 'seed': seed}}))

  assert sweep_lib.main(['gather', f'--root={root}', '--over=seed']) == 0
  printed = capsys.readouterr().out
  with open(root / 'results_over_seed.csv', newline='') as f:
    rows = {r['group']: r for r in csv.DictReader(f)}
  assert list(rows) == ['encoder=cnn', 'encoder=vit']  # Order of first run (sorted folders).
  for encoder, seeds in (('vit', (0, 1, 2)), ('cnn', (0, 1))):
    row = rows[f'encoder={encoder}']
    assert row['model.encoder'] == encoder and row['n'] == str(len(seeds))
    assert row['seed'] == ','.join(map(str, seeds))
    for k, metric in enumerate(('image_auroc', 'pixel_auroc', 'au_pro')):
      sample = [values[encoder, s][k] for s in seeds]
      assert float(row[f'{metric}_mean']) == pytest.approx(statistics.mean(sample), abs=1e-12)
      assert float(row[f'{metric}_std']) == pytest.approx(statistics.stdev(sample), abs=1e-12)
    assert float(row['train_images_per_sec_mean']) == pytest.approx(
        statistics.mean(10.0 * (s + 1) for s in seeds))
  md = (root / 'results_over_seed.md').read_text()
  assert md in printed
  # vit image AUROC: mean 0.93, stdev of (0.90, 0.94, 0.95) = 0.02646 (hand-computed).
  assert '| encoder=vit | vit | 3 | 0,1,2 | 0.930 ± 0.026 |' in md

  # One finished run: no spread; a field that does not vary: one clear error.
  assert sweep_lib.summarize(*sweep_lib.gather(str(root)), over='seed')[1][0]['n'] == 2
  single = tmp_path / 'single'
  _write_run(single, 'seed=0', {'seed': 0}, {'metrics': {'overall': {'image_auroc': 0.5}}})
  _write_run(single, 'seed=1', {'seed': 1})
  _, (row,) = sweep_lib.summarize(*sweep_lib.gather(str(single)), over='seed')
  assert (row['group'], row['n'], row['image_auroc_mean'], row['image_auroc_std']) == (
      'base', 1, 0.5, None)
  with pytest.raises(sweep_lib.SweepError, match=r'--over=model.depth: not a field .*seed'):
    sweep_lib.summarize(*sweep_lib.gather(str(single)), over='model.depth')
  _write_run(single, 'seed=2', {'seed': 2, 'model': {'depth': 3}},
             {'metrics': {'overall': {'image_auroc': 0.7}}})
  with pytest.raises(sweep_lib.SweepError, match=r"share the group 'base' but differ"):
    sweep_lib.summarize(*sweep_lib.gather(str(single)), over='seed')
  # Told that model.depth changes nothing, the runs pool: n = 2, mean (0.5 + 0.7) / 2.
  columns, (row,) = sweep_lib.summarize(*sweep_lib.gather(str(single)), over='seed',
                                        ignore=['model.depth'])
  assert 'model.depth' not in columns and row['n'] == 2
  assert row['image_auroc_mean'] == pytest.approx(0.6)
  with pytest.raises(sweep_lib.SweepError, match=r'--ignore=model.width: not a field'):
    sweep_lib.summarize(*sweep_lib.gather(str(single)), over='seed', ignore=['model.width'])


def test_gather_compares_a_field_a_run_lacks_at_the_value_it_ran_with(tmp_path):
  """A config.json written before a field existed pools with a later run of the same setting."""
  root = tmp_path / 'root'
  for seed, model in ((0, {}), (1, {'decoder_upsample': 'nearest'}),
                      (2, {'decoder_upsample': 'subpixel'})):
    _write_run(root, f'seed={seed}', {'seed': seed, 'model': model},
               {'metrics': {'overall': {'image_auroc': 0.5 + 0.1 * seed}}})
  columns, rows = sweep_lib.gather(str(root))
  assert [r['model.decoder_upsample'] for r in rows] == ['nearest', 'nearest', 'subpixel']
  with pytest.raises(sweep_lib.SweepError, match='differ in other fields than seed'):
    sweep_lib.summarize(columns, rows, over='seed')
  shutil.rmtree(root / 'seed=2')
  _, (row,) = sweep_lib.summarize(*sweep_lib.gather(str(root)), over='seed')
  assert row['n'] == 2 and row['image_auroc_mean'] == pytest.approx(0.55)


def test_plot_draws_the_pooled_means_and_spreads_per_line_and_panel(tmp_path, capsys):
  """gather --over=seed, then plot: each drawn point is the mean over seeds of its group."""
  root = tmp_path / 'root'
  auroc = {}  # (dataset, optimizer, batch, seed) -> image AUROC.
  for d, dataset in enumerate(('brick', 'tile')):
    for o, optimizer in enumerate(('adamw', 'lamb')):
      for b, batch in enumerate((16, 64, 256)):
        for seed in (0, 1):
          if (dataset, optimizer, batch) == ('tile', 'lamb', 256):
            continue  # Never ran: left out of the plot.
          value = 0.9 - 0.1 * b * (o + 1) + 0.01 * seed + 0.05 * d
          auroc[dataset, optimizer, batch, seed] = value
          _write_run(root, f'name={dataset},optimizer={optimizer},batch_size={batch},seed={seed}',
                     {'seed': seed, 'dataset': {'name': dataset},
                      'train': {'optimizer': optimizer, 'batch_size': batch}},
                     {'metrics': {'overall': {'image_auroc': value, 'pixel_auroc': 0.5,
                                              'au_pro': 1 - value}}})
  assert sweep_lib.main(['gather', f'--root={root}', '--over=seed']) == 0
  output = tmp_path / 'plot.png'
  assert sweep_lib.main(['plot', f'--root={root}', '--x=train.batch_size',
                         '--lines=train.optimizer', '--panels=dataset.name',
                         f'--output={output}']) == 0
  assert f'wrote {output}' in capsys.readouterr().out
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(output) as png:
    assert png.format == 'PNG' and png.size == (2 * 420, 2 * 320)  # 2 panels x 2 metrics.
  assert not [p for p in os.listdir(tmp_path) if '.tmp' in p]

  from vivano_jax.sweep import plot as plot_lib  # pylint: disable=g-import-not-at-top
  rows = plot_lib.read_summary(str(root), 'seed')
  data = plot_lib.series(rows, 'train.batch_size', ['train.optimizer'], 'dataset.name')
  fig = plot_lib.plot(data, 'train.batch_size', str(output))
  top_left, _, bottom_left, bottom_right = fig.axes
  assert top_left.get_title() == 'brick: image AUROC' and top_left.get_xscale() == 'log'
  drawn = {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata()))
           for c in top_left.containers}
  for optimizer in ('adamw', 'lamb'):
    xs, ys = drawn[optimizer]
    assert xs == [16, 64, 256]
    expected = [statistics.mean(auroc['brick', optimizer, b, s] for s in (0, 1))
                for b in (16, 64, 256)]
    assert ys == pytest.approx(expected, abs=1e-12)
  tile_lamb = data['tile']['lamb']
  assert [x for x, _ in tile_lamb] == [16, 64]  # The group that never ran has no point.
  mean, std = tile_lamb[1][1]['au_pro']
  sample = [1 - auroc['tile', 'lamb', 64, s] for s in (0, 1)]
  assert (mean, std) == pytest.approx((statistics.mean(sample), statistics.stdev(sample)))
  assert bottom_left.get_ylabel() == bottom_right.get_ylabel() == 'AU-PRO'

  # Bad input: one line naming the flag, exit code 2.
  for flags, message in (
      (['--x=train.lr'], '--x=train.lr: not a field that differs between the runs'),
      (['--x=train.batch_size', '--lines=model.depth'], '--lines=model.depth: not a field'),
      (['--x=dataset.name'], r"--x=dataset.name: 'brick' \(group "),
      (['--x=train.batch_size', '--metrics=f1'], "--metrics: unknown metric 'f1'"),
      (['--x=train.batch_size', f'--output={tmp_path}/missing/plot.png'],
       'the folder .*missing does not exist'),
      (['--x=seed', '--over=model.depth'], r'results_over_model.depth.csv does not exist')):
    args = ['plot', f'--root={root}', *flags]
    if not any(f.startswith('--output') for f in flags):
      args.append(f'--output={tmp_path}/bad.png')
    assert sweep_lib.main(args) == 2, flags
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert re.search(message, err), (message, err)
  assert not (tmp_path / 'bad.png').exists()


def test_plot_writes_the_format_its_output_suffix_names_and_refuses_others(tmp_path, capsys):
  """--output=a.txt (or .svg) held PNG bytes under that name: the suffix now names the format
  written (matplotlib's), and one it cannot write is one line naming the flag and the suffixes."""
  root = tmp_path / 'root'
  for batch in (16, 64):
    for seed in (0, 1):
      _write_run(root, f'batch_size={batch},seed={seed}',
                 {'seed': seed, 'train': {'batch_size': batch}},
                 {'metrics': {'overall': {'image_auroc': 0.8, 'pixel_auroc': 0.5, 'au_pro': 0.3}}})
  assert sweep_lib.main(['gather', f'--root={root}', '--over=seed']) == 0
  plot = ['plot', f'--root={root}', '--x=train.batch_size']
  heads = {'plot.svg': b'<?xml', 'plot.PDF': b'%PDF', 'plot.jpg': b'\xff\xd8\xff'}
  for name, head in heads.items():
    assert sweep_lib.main([*plot, f'--output={tmp_path / name}']) == 0, name
    assert (tmp_path / name).read_bytes().startswith(head), name
  capsys.readouterr()
  for name in ('plot.txt', 'plot', 'plot.png.bak'):
    assert sweep_lib.main([*plot, f'--output={tmp_path / name}']) == 2, name
    err = capsys.readouterr().err
    assert err.startswith(f'error: --output={tmp_path / name}: ') and err.count('\n') == 1, err
    assert 'matplotlib writes' in err and '.png' in err and '.svg' in err and '.pdf' in err, err
  assert sorted(os.listdir(tmp_path)) == ['plot.PDF', 'plot.jpg', 'plot.svg', 'root']


# --------------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize('body, match', [
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grid={{'train.batch_sise': [8]}})\n",
     r"unknown config field 'train.batch_sise' in grid .*did you mean 'train.batch_size'"),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, runs=[{{'model': 3}}])\n",
     r"unknown config field 'model' in runs"),
    ("def get_config():\n  return None\n", r'defines no get_sweep\(\) function'),
    ("def get_sweep():\n  return dict(base_config={tiny!r})\n", 'exactly one of grid'),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grid={{}}, runs=[])\n", 'exactly one'),
    # The rule is a config field now; the old sweep keys say where it went.
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grid={{'seed': [1]}}, "
     "lr_scaling='sqrt')\n", r"unknown sweep key\(s\) \['lr_scaling'\].*lr_scaling is the "
     r"config field 'train.lr_scaling' now"),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grid={{'seed': [1]}}, "
     "fixed={{'train.lr_scaling': 'sqrt'}})\n",
     r"run seed=1: train.base_batch_size must be a positive int under train.lr_scaling='sqrt'"),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grid={{'train.lr_scaling': ['log']}}, "
     "fixed={{'train.base_batch_size': 8}})\n",
     r"run lr_scaling=log: train.lr_scaling must be one of \('none', 'linear', 'sqrt'\)"),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grid={{'train.optimizer': ['sgd']}})\n",
     r"run optimizer=sgd: train.optimizer must be one of \('adamw', 'lamb', 'lars'\), got 'sgd'"),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, "
     "grid={{'train.batch_size': ['big']}})\n",
     r"field 'train.batch_size' cannot take 'big'"),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grid={{'seed': [1]}}, "
     "fixed={{'seed': 2}})\n", "'seed' is swept and also set in fixed"),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, runs=[{{'seed': 1}}, {{'seed': 1}}])\n",
     'runs 0 and 1 have the same overrides'),
    ("def get_sweep():\n  return dict(base_config='nope.py', grid={{'seed': [1]}})\n",
     r'base config .*nope.py does not exist'),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grids={{'seed': [1]}})\n",
     r"unknown sweep key\(s\) \['grids'\]"),
    ("raise RuntimeError('oops')\n", 'failed to load: RuntimeError: oops'),
    # Before: a traceback (AttributeError, TypeError or the file's own exception).
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grid=['seed'])\n",
     r"grid must be a dict of field -> list of values, got \['seed'\]"),
    ("def get_sweep():\n  return dict(base_config={tiny!r}, grid={{'seed': [1]}}, fixed='x')\n",
     "fixed must be a dict of field -> value, got 'x'"),
    ("def get_sweep():\n  return dict(base_config=5, grid={{'seed': [1]}})\n",
     'base_config must be the path of a config file, got 5'),
    ("def get_sweep():\n  raise KeyError('seed')\n", r"get_sweep\(\) failed: KeyError: 'seed'"),
    ("def get_sweep():\n  return dict(base_config={base!r}, grid={{'seed': [1]}})\n",
     r'base config .*base.py: get_config\(\) failed: ZeroDivisionError'),
    ("def get_sweep():\n  return dict(base_config={none!r}, grid={{'seed': [1]}})\n",
     r'none.py: get_config\(\) returned a value of type NoneType, not an ml_collections'),
])
def test_bad_sweep_files_give_one_clear_error(tmp_path, body, match):
  path = tmp_path / 'bad_sweep.py'
  (tmp_path / 'base.py').write_text('def get_config():\n  return 1 / 0\n')
  (tmp_path / 'none.py').write_text('def get_config():\n  return None\n')
  path.write_text(body.format(tiny=TINY, base=str(tmp_path / 'base.py'),
                              none=str(tmp_path / 'none.py')))
  # A SweepError (usage) or, for a file that does not load, a DataError: both ValueErrors.
  with pytest.raises(ValueError, match=match) as e:
    sweep_lib.load_sweep(str(path))
  assert str(path) in str(e.value)


def test_cli_errors_exit_2_with_the_file_and_field(tmp_path, capsys):
  path = _grid_sweep(tmp_path, "{'seed': [1, 2]}")
  root = str(tmp_path / 'root')
  assert sweep_lib.main(['run', f'--sweep={path}', f'--root={root}', '--dry_run',
                         '--config.train.nope=1']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and path in err and "'train.nope'" in err
  assert sweep_lib.main(['run', f'--sweep={path}', f'--root={root}', '--only=5']) == 2
  assert '--only=5 is out of range: the sweep has 2 runs' in capsys.readouterr().err
  for only, message in (('', 'no run index given'), (' ', 'no run index given'),
                        ('0,0', 'a run index is given twice')):
    assert sweep_lib.main(['run', f'--sweep={path}', f'--root={root}', f'--only={only}']) == 2
    assert message in capsys.readouterr().err
  assert sweep_lib.main(['run', f'--sweep={path}', f'--root={root}', '--dry_run',
                         '--config.seed=3']) == 2
  assert "'seed' is swept and also set in the command line" in capsys.readouterr().err
  assert sweep_lib.main(['run', f'--sweep={tmp_path / "missing.py"}', f'--root={root}']) == 1
  assert 'missing.py does not exist' in capsys.readouterr().err
  broken = tmp_path / 'broken.py'
  broken.write_text(f'def get_sweep():\n  return dict(base_config={TINY!r}, grid=[1])\n')
  assert sweep_lib.main(['run', f'--sweep={broken}', f'--root={root}']) == 2
  err = capsys.readouterr().err
  assert err.startswith(f'error: {broken}: grid must be') and err.count('\n') == 1, err
  broken.write_text('def get_sweep():\n  return {}["grid"]\n')
  assert sweep_lib.main(['run', f'--sweep={broken}', f'--root={root}']) == 1
  err = capsys.readouterr().err
  assert err == f"error: sweep file {broken}: get_sweep() failed: KeyError: 'grid'\n", err
  assert not os.path.exists(root)  # Nothing written by failed or dry runs.


@pytest.mark.parametrize('args, flag', [
    (['run', '--sweep={sweep}', '--root=', '--dry_run'], '--root'),
    (['run', '--sweep={sweep}', '--root= ', '--print_commands'], '--root'),
    (['run', '--sweep=', '--root=r', '--dry_run'], '--sweep'),
    (['gather', '--root='], '--root'),
    (['plot', '--root=r', '--x=seed', '--output='], '--output'),
])
def test_an_empty_path_argument_is_a_usage_error(tmp_path, capsys, monkeypatch, args, flag):
  """--root= (an unset shell variable) ran the sweep into the current folder and gather wrote
  its tables there; --sweep= was 'sweep file <cwd> does not exist'."""
  sweep = _grid_sweep(tmp_path, "{'seed': [1]}")
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  assert sweep_lib.main([a.format(sweep=sweep) for a in args]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f'error: {flag}=') and 'is empty' in err and err.count('\n') == 1, err
  assert not any(cwd.iterdir())


def test_a_launcher_that_is_no_command_is_refused_before_any_run(tmp_path, capsys):
  """--launcher='srun_typo launch/multihost.sh' wrote the plan, then every run failed with a bare
  'srun_typo: No such file or directory' (a traceback under python -m vivano_jax.sweep)."""
  sweep = _grid_sweep(tmp_path, "{'seed': [1, 2]}")
  root = tmp_path / 'root'
  assert sweep_lib.main(['run', f'--sweep={sweep}', f'--root={root}',
                         '--launcher=srun_typo launch/multihost.sh']) == 2
  assert capsys.readouterr().err == (
      "error: --launcher=srun_typo launch/multihost.sh: 'srun_typo' is neither a command on PATH "
      'nor an executable file\n')
  assert not root.exists()


def test_a_root_starting_with_a_tilde_is_in_the_home_folder(tmp_path, capsys, monkeypatch):
  """The shell leaves the '~' of --root=~/sweep as it is: the runs went to a folder named '~'."""
  sweep = _grid_sweep(tmp_path, "{'seed': [1]}")
  home, cwd = tmp_path / 'home', tmp_path / 'cwd'
  home.mkdir()
  cwd.mkdir()
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.chdir(cwd)
  assert sweep_lib.main(['run', f'--sweep={sweep}', '--root=~/sweep', '--print_commands']) == 0
  assert f'--workdir={home / "sweep" / "seed=1"}' in capsys.readouterr().out
  assert sweep_lib.main(['gather', '--root=~/sweep']) == 0
  assert (home / 'sweep' / 'results.csv').is_file() and not any(cwd.iterdir())


# --------------------------------------------------------------------------------------------------
# The sweep files of sweeps/.


@pytest.mark.parametrize('name', sorted(p.stem for p in (REPO / 'sweeps').glob('*.py')))
def test_every_sweep_file_expands(name):
  sweep = sweep_lib.load_sweep(str(REPO / 'sweeps' / f'{name}.py'),
                               {'dataset.manual_dir': '/data/magnetic_tile'})
  assert sweep.runs and len({r.name for r in sweep.runs}) == len(sweep.runs)
  assert all(r.effective['learning_rate'] > 0 for r in sweep.runs)


def test_large_batch_sweep_plan():
  sweep = sweep_lib.load_sweep(str(REPO / 'sweeps' / 'large_batch.py'),
                               {'dataset.manual_dir': '/data/magnetic_tile'})
  # 5 methods x 7 batches, less the two AdamW rules that equal 'none' at the base batch; 2 datasets,
  # 3 seeds; seed 0 first.
  assert len(sweep.runs) == 33 * 2 * 3
  assert [r.flags['seed'] for r in sweep.runs[:66]] == [0] * 66
  by_method = {}
  for r in sweep.runs:
    f = r.flags
    assert f['train.num_epochs'] == 20 and f['train.num_steps'] == 0
    assert f['train.base_batch_size'] == 16 and f['dataset.manual_dir'] == '/data/magnetic_tile'
    b, k = f['train.batch_size'], f['train.grad_accum_steps']
    assert b % (8 * k) == 0 and b // k <= 256  # 8 devices x microbatches, microbatches <= 256.
    assert len(r.name) <= sweep_lib.MAX_NAME_LENGTH and '-' not in r.name.split(',')[-1]
    by_method.setdefault((f['train.optimizer'], f['train.lr_scaling']), {})[b] = r.effective
  assert sorted(by_method) == [('adamw', 'linear'), ('adamw', 'none'), ('adamw', 'sqrt'),
                               ('lamb', 'sqrt'), ('lars', 'linear')]
  assert sorted(by_method['adamw', 'none']) == [16, 32, 64, 128, 256, 512, 1024]
  assert 16 not in by_method['adamw', 'sqrt'] and 16 not in by_method['adamw', 'linear']
  # Hand-computed: 1e-3 at 16 -> sqrt(64) * 1e-3 at 1024; LARS 0.1 -> 64 * 0.1; LAMB 1e-2 * 2 at 64.
  assert by_method['adamw', 'sqrt'][1024]['learning_rate'] == pytest.approx(8e-3, rel=1e-12)
  assert by_method['adamw', 'linear'][32]['learning_rate'] == pytest.approx(2e-3, rel=1e-12)
  assert by_method['lars', 'linear'][1024]['learning_rate'] == pytest.approx(6.4, rel=1e-12)
  assert by_method['lamb', 'sqrt'][64]['learning_rate'] == pytest.approx(2e-2, rel=1e-12)
  # The recipe's 50 warmup steps at 16: ceil(50 * 16 / B) at B.
  assert [by_method['lamb', 'sqrt'][b]['warmup_steps'] for b in (16, 64, 256, 1024)] == [
      50, 13, 4, 1]
  assert by_method['adamw', 'none'][1024] == {'learning_rate': 1e-3, 'warmup_steps': 50,
                                              'lr_factor': 1.0}


def test_large_batch_segmenter_sweep_is_the_same_study_on_the_segmenter_recipe():
  flags = {'dataset.manual_dir': '/data/magnetic_tile'}
  plain = sweep_lib.load_sweep(str(REPO / 'sweeps' / 'large_batch.py'), flags)
  seg = sweep_lib.load_sweep(str(REPO / 'sweeps' / 'large_batch_segmenter.py'), flags)
  assert [(r.name, r.flags) for r in seg.runs] == [(r.name, r.flags) for r in plain.runs]
  assert pathlib.Path(seg.base_config) == REPO / 'configs' / 'magnetic_tile.py'
  assert pathlib.Path(plain.base_config) == REPO / 'configs' / 'magnetic_tile_plain.py'


def test_segmenter_resolution_sweep_scores_textures_as_configs_mvtec_ad():
  sweep = sweep_lib.load_sweep(str(REPO / 'sweeps' / 'segmenter_resolution.py'),
                               {'dataset.manual_dir': '/data/magnetic_tile'})
  mvtec = load_config('mvtec_ad')
  assert len(sweep.runs) == 12
  for r in sweep.runs:
    f = r.flags
    assert f['model.segmenter_resolution'] == 'half'
    if f['dataset.name'] == 'folder':  # configs/magnetic_tile.py as it is.
      assert f['dataset.manual_dir'] == '/data/magnetic_tile' and 'score.image' not in f
    else:
      assert f['dataset.manual_dir'] == '' and f['train.num_steps'] == 1200
      for field in ('image', 'ensemble', 'pixel', 'normalize', 'combine'):
        got, want = f[f'score.{field}'], mvtec.score[field]
        if isinstance(want, (list, tuple)):
          got, want = tuple(got), tuple(want)
        assert got == want, field


def test_gather_shows_the_effective_rate_of_each_run(tmp_path):
  root = tmp_path / 'root'
  for b, lr in ((16, 0.001), (64, 0.002)):
    _write_run(root, f'batch_size={b}', {
        'train': {'batch_size': b, 'learning_rate': 0.001, 'lr_scaling': 'sqrt'},
        'effective': {'learning_rate': lr, 'warmup_steps': 50 * 16 // b, 'lr_factor': lr / 0.001}},
        {'metrics': {'overall': {'image_auroc': 0.5}}})
  columns, rows = sweep_lib.gather(str(root))
  assert columns[2:6] == ['effective.learning_rate', 'effective.lr_factor',
                          'effective.warmup_steps', 'train.batch_size']
  assert [(r['train.batch_size'], r['effective.learning_rate'], r['effective.warmup_steps'])
          for r in rows] == [(16, 0.001, 50), (64, 0.002, 12)]


# --------------------------------------------------------------------------------------------------
# A real sweep.


def test_real_sweep_of_two_tiny_runs_then_restart_and_gather(tmp_path, tfds_dir, capsys):
  """`vivano sweep` in this process (as the console script calls it); its runs are real main runs
  in subprocesses. Over the seed, which no compiled program holds: the second run and other tests'
  10-step tiny runs share the compiled programs (XLA's persistent cache, tests/conftest.py)."""
  path = _grid_sweep(tmp_path, "{'seed': [3, 4]}")
  root = tmp_path / 'root'
  args = ['run', f'--sweep={path}', f'--root={root}', '--config.train.num_steps=10',
          f'--config.dataset.data_dir={tfds_dir}',
          '--config.export.at_end=False']  # Export is tested elsewhere; gather reads metrics.json.
  assert sweep_lib.main(args) == 0, capsys.readouterr()
  out = capsys.readouterr().out
  assert out.count(': done in ') == 2, out
  for name, seed in (('seed=3', 3), ('seed=4', 4)):
    config = json.loads((root / name / 'config.json').read_text())
    assert config['seed'] == seed and config['train']['num_steps'] == 10
    assert (root / name / 'checkpoints' / '10').is_dir()

  assert sweep_lib.main(args) == 0
  out = capsys.readouterr().out
  assert out.count('), skipped') == 2, out

  assert sweep_lib.main(['gather', f'--root={root}']) == 0
  out = capsys.readouterr().out
  with open(root / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [(r['run'], r['status']) for r in rows] == [('seed=3', 'done'), ('seed=4', 'done')]
  for r in rows:
    assert 0.0 <= float(r['image_auroc']) <= 1.0 and float(r['train_images_per_sec']) > 0
  assert '| seed=3 | done | 3 |' in out
