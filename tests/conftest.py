"""Shared fixtures. Tests run on the CPU; tests needing several devices start subprocesses."""

import os
import pathlib
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One persistent XLA compilation cache for the whole run: pytest-xdist's workers and the
# subprocesses tests start inherit it, so the tiny models' steps are compiled once, not in every
# test. Set before JAX is imported; a cache the caller set is used as it is.
_OWN_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _OWN_CACHE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='vivano-tests-xla-cache-')
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'

# XLA:CPU compiles the tests' programs at LLVM optimisation level 1 instead of its default 3 (the
# level `train_step.create_train_state` already uses for its initialisation on CPUs): the suite is
# mostly the compilation of tiny models, which takes about a third less CPU time at level 1 (the
# whole suite: a sixth; BENCHMARKS.md). The same numbers up to rounding; level 0 is never used.
# Subprocesses that set a device count keep it (`subprocess_env`). A value the caller set is kept.
# For the same reason XLA:CPU's older loop emitters generate the fused kernels instead of its new
# fusion emitters: a tiny train step compiles in half the time (3.5 -> 1.7 s) and runs as fast; the
# whole suite takes a twentieth less CPU (BENCHMARKS.md). And LLVM neither unrolls the kernels'
# loops nor optimises them for speed over size: a tiny train step compiles in less than half the
# CPU time again (7 -> 3 s), its numbers changed in the last bits; the test files that train take a
# tenth less CPU (BENCHMARKS.md). Production code keeps XLA's defaults.
_LLVM = 'xla_cpu_disable_loop_unrolling,xla_cpu_optimize_for_size'
for _flag in ('--xla_backend_optimization_level=1', '--xla_cpu_use_fusion_emitters=false',
              f'--xla_backend_extra_options={_LLVM}'):
  if _flag.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {_flag}'.strip()

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


def subprocess_env(devices: int | None = None) -> dict[str, str]:
  """The environment of a test's subprocess: this one's (its XLA_FLAGS kept) with the repository
  importable, TensorFlow quiet and, when given, `devices` simulated CPU devices."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=str(REPO))
  if devices:
    env['XLA_FLAGS'] = (f'{os.environ.get("XLA_FLAGS", "")} '
                        f'--xla_force_host_platform_device_count={devices}')
  return env


def load_config(name: str, arg=None):
  """configs/<name>.py's get_config(arg), as `--config=configs/<name>.py[:arg]` gives it."""
  from vivano_jax import config_files  # pylint: disable=g-import-not-at-top
  return config_files.load_config(REPO / 'configs' / f'{name}.py', arg)


def shared_tmp(tmp_path_factory) -> pathlib.Path:
  """A folder of this test session shared by all its pytest-xdist workers (the session's own
  temporary folder without xdist): what is made there once serves every worker."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """One tfds data dir for the whole session, shared by the workers, so each dataset is prepared
  once (preparation takes a lock on the data dir: datasets/builder.py)."""
  path = shared_tmp(tmp_path_factory) / 'tfds'
  path.mkdir(exist_ok=True)
  return str(path)


@pytest.fixture
def tiny_config(tfds_dir):
  config = load_config('tiny')
  config.dataset.data_dir = tfds_dir
  return config


# The test files, heaviest first (their CPU time in a suite run, BENCHMARKS.md "The test suite");
# the others follow in their own order. pytest-xdist (`--dist loadfile --no-loadscope-reorder`,
# setup.cfg) hands out whole files in this order, so the long files start first and the two
# workers end together (longest-processing-time-first), instead of a long file started last
# running on one core while the other waits.
HEAVIEST_FILES_FIRST = (
    'test_train.py', 'test_export_model.py', 'test_workdir.py', 'test_multiprocess.py',
    'test_cli.py', 'test_segmenter.py', 'test_optimizer.py', 'test_model.py', 'test_sweep.py',
    'test_datasets_files.py', 'test_export.py', 'test_pinned_metrics.py', 'test_predict.py',
    'test_datasets_embedded.py', 'test_scoring.py', 'test_input_pipeline.py',
    'test_score_components.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(HEAVIEST_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: a file's own order.


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE:  # The process that made the cache (xdist's workers inherit the variable).
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)


def disk_full_open(path, mode='r', **kwargs):
  """`open` whose streams opened for writing write half of what they are given, then fail as a
  full disk does; monkeypatch it over a module's `open`."""
  stream = open(path, mode, **kwargs)  # pylint: disable=unspecified-encoding
  if 'w' in mode or 'a' in mode:
    real_write = stream.write

    def write(text):
      real_write(text[:len(text) // 2])
      raise OSError(28, 'No space left on device', str(path))
    stream.write = write
  return stream

