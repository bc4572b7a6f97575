"""Shared fixtures. Tests run on the CPU; tests needing several devices start subprocesses."""

import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


def load_config(name: str, arg=None):
  """configs/<name>.py's get_config(arg), as `--config=configs/<name>.py[:arg]` gives it."""
  from vivano_jax import config_files  # pylint: disable=g-import-not-at-top
  return config_files.load_config(REPO / 'configs' / f'{name}.py', arg)


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """One tfds data dir for the whole session, so each dataset is prepared once."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture
def tiny_config(tfds_dir):
  config = load_config('tiny')
  config.dataset.data_dir = tfds_dir
  return config
