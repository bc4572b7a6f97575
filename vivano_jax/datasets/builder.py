"""What every dataset builder shares: the checks of its config fields, and how it is written.

Every `make_builder(cfg, data_dir)` checks `cfg.name` with `check_name` (a `UsageError` listing
the valid names), finds `cfg.manual_dir` with `manual_root` when it reads local files (one line
naming the field, the dataset and the layout it expects) and writes the dataset with `prepare`, so
that a failure never leaves a half-written dataset that tfds would load. `EmbeddedBuilder` is the
base of the builders whose data ships with a Python package (digits, textures).
"""

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import shutil
import sys
from typing import Iterator, Sequence

import ml_collections
import tensorflow_datasets as tfds

from vivano_jax import atomic_files
from vivano_jax import console
from vivano_jax import errors
from vivano_jax.datasets import features
from vivano_jax.datasets import image_files


def config_names(builder_cls: type[tfds.core.DatasetBuilder]) -> list[str]:
  """The dataset names ('<builder>/<config>') a builder class accepts."""
  return [f'{builder_cls.name}/{config.name}' for config in builder_cls.BUILDER_CONFIGS]


def check_name(name: str, valid: Sequence[str]) -> None:
  """UsageError unless `name` (cfg.name) is one of `valid`."""
  if name not in valid:
    raise errors.UsageError(f'unknown dataset.name={name!r}; valid names: {", ".join(valid)}')


def manual_root(cfg: ml_collections.ConfigDict, expected: str) -> pathlib.Path:
  """`cfg.manual_dir` as an absolute, existing directory.

  Args:
    cfg: config.dataset, of a dataset that reads local files.
    expected: what the folder must hold, for the error message (e.g. 'train/good/*, ...').

  Raises:
    UsageError when manual_dir is empty or unset (the configs default to ''), DataError when it
    is not a directory; either is one line naming `dataset.manual_dir`, the dataset and `expected`.
  """
  value = str(cfg.get('manual_dir') or '').strip()
  if not value:
    raise errors.UsageError(f'dataset.manual_dir is empty, but dataset {cfg.name!r} reads local '
                            f'files: set it to {expected}')
  try:
    return image_files.directory(value, 'dataset.manual_dir')
  except errors.DataError as e:
    raise errors.DataError(f'{e} Dataset {cfg.name!r} expects {expected}') from None


def _remove_unfinished(builder: tfds.core.DatasetBuilder) -> None:
  """Deletes whatever a failed preparation of `builder` left that could pass for a dataset.

  tfds 4.9.10 writes into `<config dir>/incomplete.<random>_<version>/` and renames it to
  `<version>/` only on success; its own `finally` removes the temporary folder on an exception, and
  tfds never loads a folder whose name is not a version. This also removes a version folder without
  dataset_info.json (should a later tfds rename first and fail after) and leaves the data_dir as
  clean as before.
  """
  data_path = pathlib.Path(os.fspath(builder.data_path))
  if data_path.exists() and not (data_path / 'dataset_info.json').exists():
    shutil.rmtree(data_path)
  config_dir = data_path.parent
  for path in (config_dir, config_dir.parent):  # Empty folders only; never another dataset.
    if path.is_dir() and not any(path.iterdir()):
      path.rmdir()


@contextlib.contextmanager
def _exclusive(data_dir_root: str | os.PathLike):
  """Holds an exclusive lock on `<data_dir>/.prepare.lock` (runs started side by side, e.g. a
  sweep's `xargs -P 2`, would otherwise write the same dataset at once, and the second rename
  fails); the second waits, then finds the dataset written and reuses it."""
  root = pathlib.Path(os.fspath(data_dir_root))
  lock = root / '.prepare.lock'
  try:
    root.mkdir(parents=True, exist_ok=True)
    lock.touch()
    writable = True
  except OSError:  # A read-only data_dir of prepared datasets: nothing will be written there.
    writable = False
  if not writable:  # (Outside the except: an error in the block is not chained to this one.)
    yield
    return
  with atomic_files.exclusive_lock(lock):
    yield


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | os.PathLike | None = None) -> None:
  """`builder.download_and_prepare` that leaves no finished-looking dataset behind when it fails.

  Callers validate their input first; this guards against failures during writing (a file changed
  since validation, a full disk, Ctrl-C). Nothing is looked up on GCS: none of these datasets is
  hosted there, and the lookup needs the network. One process at a time writes to a data_dir; a
  dataset already prepared is read without waiting for that lock (another run may hold it for
  minutes while it writes another dataset).
  """
  if builder.info.splits and builder.is_prepared():  # Read from its folder when it was built.
    return
  config = tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir) if manual_dir else None, try_download_gcs=False)
  if console.quiet():
    tfds.disable_progress_bar()
  with _exclusive(builder.data_dir_root):
    written_meanwhile = not builder.info.splits and (
        pathlib.Path(os.fspath(builder.data_path)) / 'dataset_info.json').exists()
    try:
      with console.prints_to_log('tensorflow_datasets'):  # Its "Downloading and preparing" lines.
        builder.download_and_prepare(download_config=config)
    except BaseException:
      _remove_unfinished(builder)
      raise
    if written_meanwhile:  # By another run while this one waited: read what it wrote.
      builder.info.read_from_directory(builder.data_dir)


def files_fingerprint(root: pathlib.Path, files: Sequence[pathlib.Path]) -> str:
  """sha256 hex digest of `root` and (path relative to it, size, mtime) of each of `files`, in
  their order: what a prepared dataset was made from (stat only; it changes when a file is added,
  removed, renamed, rewritten or touched)."""
  digest = hashlib.sha256(str(root).encode())
  for path in files:
    stat = path.stat()
    digest.update(f'\0{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}'.encode())
  return digest.hexdigest()


def remove_if_made_elsewhere(builder: tfds.core.DatasetBuilder, root: pathlib.Path,
                             fingerprint: str) -> bool:
  """Whether `builder`'s prepared dataset was made from other files than `fingerprint` describes
  (its metadata 'made_from' folder and 'fingerprint'); if so it is removed, with one line saying
  from what it was made, so that the caller prepares it again from `root` with a new builder."""
  metadata = builder.info.metadata or {}
  if metadata.get('fingerprint') == fingerprint:
    return False
  made_from = metadata.get('made_from')
  why = (f'was made from {made_from}' if made_from and made_from != str(root) else
         'was made from these files before they changed' if made_from else
         'does not record the files it was made from')
  console.say(f'{builder.name}/{builder.builder_config.name}: the dataset prepared in '
              f'{builder.data_dir} {why}: preparing it again from {root}', sys.stderr)
  shutil.rmtree(builder.data_path)
  return True


class LocalDatasetInfo(tfds.core.DatasetInfo):
  """The DatasetInfo of every vivano_jax builder. Its datasets are built from local files or code,
  never kept on tfds' GCS bucket; tfds' own `initialize_from_bucket`, called for each builder whose
  dataset is not yet prepared, made an empty /tmp/tmp*tfds folder for that bucket's files every
  time and never removed it."""

  def initialize_from_bucket(self) -> None:
    pass


@dataclasses.dataclass(eq=False)
class SeededConfig(tfds.core.BuilderConfig):
  """A config whose examples are drawn with `seed` (a permutation, tile offsets, defects)."""
  seed: int = 0


class EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose data ships with a Python package: nothing to download, no manual_dir.

  Subclasses set HOMEPAGE and BUILDER_CONFIGS (`SeededConfig`s) and `generate_split(config name,
  split, seed)`, which yields (key, example) in the `features.py` format, grayscale. The module
  that defines the subclass documents the dataset: its docstring is the dataset's description.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  SPLITS = ('train', 'test')
  HOMEPAGE = ''

  @staticmethod
  def generate_split(config_name: str, split: str, seed: int) -> Iterator[tuple[str, dict]]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return LocalDatasetInfo(
        builder=self,
        description=sys.modules[type(self).__module__].__doc__,
        features=features.example_features(1),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in self.SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    yield from self.generate_split(config.name, split, config.seed)


def make_embedded(builder_cls: type[EmbeddedBuilder], cfg: ml_collections.ConfigDict,
                  data_dir: str | None = None) -> EmbeddedBuilder:
  """The prepared (cached in `data_dir`) builder for cfg.name = '<builder>/<config>'."""
  check_name(cfg.name, config_names(builder_cls))
  builder = builder_cls(config=cfg.name.split('/', 1)[1], data_dir=data_dir)
  prepare(builder)
  return builder
