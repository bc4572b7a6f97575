"""Several processes: two CPU processes of 2 devices each train like one process.

Two processes on 127.0.0.1 (gloo CPU collectives), 2 simulated devices each, run `vivano_jax.main`
through tests/multiprocess_main.py on the same global batches as one process (the test's own, with
its one device, and the same hooks). They must end with the same parameters in every process, in
the checkpoint, and as the single process. (That any number of devices in one process trains alike
is test_train.py's eight-device test.)

Why the wrapper feeds synthetic batches: the input pipeline gives each process its own shard of the
split (`tfds.split_for_jax_process`) in its own permutation, so with the real pipeline 2 processes
see other global batches than 1 process, and the runs cannot be compared. What the real pipeline
must give (disjoint shards that cover the split) is checked on its own below.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import multiprocess_main
from tests.conftest import REPO
from tests.conftest import subprocess_env
from vivano_jax import cli
from vivano_jax import datasets
from vivano_jax import input_pipeline
from vivano_jax import checkpoints
from vivano_jax import sharding
from vivano_jax import train
from vivano_jax import train_step

TINY = str(REPO / 'configs' / 'tiny.py')
MULTIHOST = str(REPO / 'launch' / 'multihost.sh')


def _gloo_available() -> bool:
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(_jax, 'make_gloo_tcp_collectives')


needs_gloo = pytest.mark.skipif(not _gloo_available(),
                                reason='this jaxlib has no gloo CPU collectives '
                                       '(jax._src.lib._jax.make_gloo_tcp_collectives)')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  # jax 0.10 already defaults to gloo; explicit, so an older default (none) cannot hang.
  return dict(subprocess_env(devices), JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')


def _restore(workdir, config):
  mngr = checkpoints.manager(str(workdir), config)
  restored, meta = checkpoints.restore(mngr, config, sharding.make_mesh())
  flat = {'/'.join(str(k.key) for k in path): np.asarray(x)
          for path, x in jax.tree_util.tree_flatten_with_path(
              {'params': restored.params, 'batch_stats': restored.batch_stats})[0]}
  return flat, meta


def test_process_shards_are_disjoint_and_cover_the_split(tiny_config):
  builder = datasets.get_builder(tiny_config.dataset)
  for split in ('train', 'test'):
    full = input_pipeline.load_split(builder, split, tiny_config.dataset, process_index=0,
                                     process_count=1).filenames
    shards = [set(input_pipeline.load_split(builder, split, tiny_config.dataset, process_index=i,
                                            process_count=2).filenames) for i in range(2)]
    assert len(set(full)) == len(full) > 0
    assert not shards[0] & shards[1], split
    assert shards[0] | shards[1] == set(full), split
    assert abs(len(shards[0]) - len(shards[1])) <= 1, split


@needs_gloo
def test_two_processes_train_like_one_process_on_the_same_global_batch(tiny_config, tmp_path):
  config = tiny_config
  config.train.num_steps = 4
  input_pipeline.load(config, ('train', 'test'))  # Prepare the data once, before the subprocesses.
  flags = [f'--config={TINY}', f'--config.dataset.data_dir={config.dataset.data_dir}',
           '--config.train.num_steps=4', '--config.train.checkpoint_every_steps=4',
           '--config.train.log_every_steps=2', '--config.export.at_end=False',
           # The combined score standardises by statistics of the training normals of all processes.
           '--config.score.image=combined', '--config.score.pixel=combined']
  script = str(REPO / 'tests' / 'multiprocess_main.py')
  port = _free_port()
  runs = {'two': (tmp_path / 'two', 2), 'one': (tmp_path / 'one', 1)}
  cmds = [[sys.executable, script, str(tmp_path / 'dump_two'), *flags,
           f'--workdir={runs["two"][0]}', f'--coordinator_address=127.0.0.1:{port}',
           '--num_processes=2', f'--process_id={i}'] for i in range(2)]
  procs = [subprocess.Popen(cmd, env=_env(2), cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for cmd in cmds]
  try:
    # Meanwhile the single process, here: main with multiprocess_main.py's two hooks.
    (tmp_path / 'dump_one').mkdir()
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(input_pipeline, 'train_batches', multiprocess_main.synthetic_train_batches)
      patch.setattr(train, 'evaluate_run', multiprocess_main.dump_then_evaluate(
          str(tmp_path / 'dump_one'), train.evaluate_run))
      assert cli.main(['vivano', 'train', *flags, f'--workdir={runs["one"][0]}']) == 0
    outputs = [p.communicate(timeout=600)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]

  dumps = [dict(np.load(tmp_path / 'dump_two' / f'process{i}.npz')) for i in range(2)]
  single = dict(np.load(tmp_path / 'dump_one' / 'process0.npz'))
  assert [int(d['num_processes']) for d in dumps + [single]] == [2, 2, 1]
  assert [int(d['num_devices']) for d in dumps + [single]] == [4, 4, 1]
  keys = [k for k in single if k.startswith(('params/', 'batch_stats/'))]
  assert any(k.startswith('batch_stats/') for k in keys) and len(keys) > 10
  # (a) Both processes hold the same state, bit for bit.
  for k in keys:
    np.testing.assert_array_equal(dumps[0][k], dumps[1][k], err_msg=k)

  # (b) The checkpoints hold it, and 2 x 2 devices equal 1 device. The cross-process all-reduce
  # sums in another order, and Adam's division by sqrt(v) turns that rounding, on a gradient near
  # 0, into a visible step: atol 1e-5 is 1% of one step at the tiny config's learning rate (1e-3).
  # Seen: at most 1.4e-6.
  two, meta_two = _restore(runs['two'][0], config)
  one, meta_one = _restore(runs['one'][0], config)
  assert meta_two['step'] == meta_one['step'] == 4
  for k in keys:
    np.testing.assert_array_equal(two[k], dumps[0][k], err_msg=k)
    np.testing.assert_array_equal(one[k], single[k], err_msg=k)
    np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-5, err_msg=k)

  # (c) Evaluation gathers every process's shard of the test split: same images, same AUROC.
  m_two = json.loads((runs['two'][0] / 'metrics.json').read_text())
  m_one = json.loads((runs['one'][0] / 'metrics.json').read_text())
  assert m_two['num_test_images'] == m_one['num_test_images'] > 0
  assert m_two['metrics']['overall']['image_auroc'] == pytest.approx(
      m_one['metrics']['overall']['image_auroc'], abs=1e-3)
  # The score statistics are over the whole training split, not process 0's shard.
  assert sorted(m_two['score_stats']) == sorted(m_one['score_stats'])
  for k, (mean, std) in m_one['score_stats'].items():
    assert m_two['score_stats'][k] == pytest.approx([mean, std], rel=1e-3), k


# --------------------------------------------------------------------------------------------------
# launch/multihost.sh: where the distributed settings come from (a fake python prints what it gets).


def _multihost(tmp_path, env: dict[str, str], *args: str) -> tuple[list[str], str]:
  fake = tmp_path / 'fake_python'
  fake.write_text('#!/bin/sh\necho "LOCAL=${JAX_LOCAL_DEVICE_IDS:-}"\nfor a in "$@"; do echo "$a"; '
                  'done\n')
  fake.chmod(0o755)
  base = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'PYTHON': str(fake)}
  proc = subprocess.run(['bash', MULTIHOST, *args], env=base | env, capture_output=True, text=True,
                        timeout=30)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  return lines[1:], lines[0].removeprefix('LOCAL=')


def test_multihost_script_takes_settings_from_flags_env_and_schedulers(tmp_path):
  main = ['-m', 'vivano_jax.main']
  user = ['--config=configs/tiny.py', '--workdir=/shared/run', '--config.seed=3']
  args, local = _multihost(tmp_path, {}, '--coordinator_address=h0:1234', '--num_processes=2',
                           '--process_id=1', *user)
  assert args == main + ['--num_processes=2', '--process_id=1',
                         '--coordinator_address=h0:1234'] + user
  assert local == ''
  # Environment; a flag wins over it.
  env = {'COORDINATOR_ADDRESS': 'h1:99', 'NUM_PROCESSES': '4', 'PROCESS_ID': '3'}
  args, _ = _multihost(tmp_path, env, *user)
  assert args == main + ['--num_processes=4', '--process_id=3',
                         '--coordinator_address=h1:99'] + user
  args, _ = _multihost(tmp_path, env, '--process_id=0', *user)
  assert args[:4] == main + ['--num_processes=4', '--process_id=0']
  # SLURM, one task per node with 4 GPUs: the coordinator is left to jax, the process gets all GPUs.
  slurm = {'SLURM_NTASKS': '2', 'SLURM_PROCID': '1', 'SLURM_LOCALID': '0',
           'SLURM_STEP_TASKS_PER_NODE': '1(x2)', 'CUDA_VISIBLE_DEVICES': '0,1,2,3'}
  args, local = _multihost(tmp_path, slurm, *user)
  assert args == main + ['--num_processes=2', '--process_id=1'] + user
  assert local == '0,1,2,3'
  # SLURM, one task per GPU: jax's own choice (the GPU numbered SLURM_LOCALID) stands.
  per_gpu = slurm | {'SLURM_NTASKS': '8', 'SLURM_STEP_TASKS_PER_NODE': '4(x2)'}
  args, local = _multihost(tmp_path, per_gpu, *user)
  assert args[:3] == main + ['--num_processes=8'] and local == ''
  # Open MPI.
  args, _ = _multihost(tmp_path, {'OMPI_COMM_WORLD_SIZE': '3', 'OMPI_COMM_WORLD_RANK': '2'}, *user)
  assert args == main + ['--num_processes=3', '--process_id=2'] + user
  # One process, or nothing known: main runs alone.
  assert _multihost(tmp_path, {}, *user)[0] == main + user
  assert _multihost(tmp_path, {'NUM_PROCESSES': '1', 'PROCESS_ID': '0'}, *user)[0] == main + user
