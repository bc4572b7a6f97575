"""The MVTec AD folder layout that the `mvtec_ad` and `folder` builders read:

  <root>/train/good/<name>.<ext>                         defect-free training images
  <root>/test/<defect_type>/<name>.<ext>                 test images; 'good' = defect-free
  <root>/ground_truth/<defect_type>/<stem>_mask.<ext>    masks of the defective test images

Masks: any pixel value > 0 is defective (JPEG masks: above half their maximum; stored as 0/1); a
mask must have its image's size. Files are named and decoded as `image_files` says.

Everything is checked before tfds writes anything: `scan_layout` checks the folder structure
(listing only), `validate_images` opens AND fully decodes every image and mask. Every problem is
reported as one `errors.DataError` that names the file or folder.
"""

import collections
import dataclasses
import os
import pathlib
import sys
from typing import Iterator

from absl import logging
import numpy as np

from vivano_jax import errors
from vivano_jax import image_io
from vivano_jax.datasets import builder as builder_lib
from vivano_jax.datasets import features
from vivano_jax.datasets import image_files

GOOD = features.GOOD
MASK_SUFFIX = '_mask'
OVERALL = 'overall'  # The metrics' row of all test images (metrics.py): no defect type's name.
TRAIN, TEST, GROUND_TRUTH = 'train', 'test', 'ground_truth'


@dataclasses.dataclass(frozen=True)
class Entry:
  """One image of a layout; paths are POSIX and relative to the layout's root."""
  relpath: str              # 'test/crack/000.png'
  defect_type: str          # 'good' or the defect folder's name
  mask_relpath: str | None  # 'ground_truth/crack/000_mask.png', None without a mask file
  has_mask: bool            # the mask is true pixel ground truth (always True for 'good')


@dataclasses.dataclass(frozen=True)
class Layout:
  """The files of one dataset folder in the MVTec AD layout (structure only, nothing decoded)."""
  root: pathlib.Path
  train: tuple[Entry, ...]
  test: tuple[Entry, ...]

  def split(self, name: str) -> tuple[Entry, ...]:
    return {TRAIN: self.train, TEST: self.test}[name]

  def counts(self) -> dict[str, int]:
    """Images per folder: {'train/good': n, 'test/good': n, 'test/<defect>': n, ...}."""
    counts = collections.Counter(f'{TRAIN}/{GOOD}' for _ in self.train)
    counts.update(f'{TEST}/{e.defect_type}' for e in self.test)
    return dict(counts)

  def files(self) -> list[str]:
    """Every file the dataset reads (images, then masks), relative to `root`."""
    entries = self.train + self.test
    return [e.relpath for e in entries] + [e.mask_relpath for e in entries if e.mask_relpath]


def _find_masks(gt_dir: pathlib.Path, problems: list[str]) -> dict[str, str]:
  """{image stem: mask file name} of a ground_truth/<defect> folder."""
  masks = {}
  for name in image_files.list_class_folder(gt_dir, problems):
    stem = os.path.splitext(name)[0]
    if not stem.endswith(MASK_SUFFIX):
      problems.append(f'{gt_dir / name}: not a mask name '
                      f'(expected <image stem>{MASK_SUFFIX}.<ext>)')
      continue
    image_stem = stem[:-len(MASK_SUFFIX)]
    if image_stem in masks:
      problems.append(f'{gt_dir / name}: two masks for image stem {image_stem!r} '
                      f'({masks[image_stem]} and {name})')
      continue
    masks[image_stem] = name
  return masks


_warned = set()  # Each warning once a process: a layout is scanned each time a split is loaded.


def _warn(message: str) -> None:
  """Something in the folder is ignored: said on the console (and in the log), as it may be a
  misnamed folder whose masks were meant to count."""
  if message in _warned:
    return
  _warned.add(message)
  logging.warning(message)
  print(f'warning: {message}', file=sys.stderr)


def _missing(folder: pathlib.Path) -> str:
  """Why `folder`, which the layout needs, cannot be read: 'missing folder' or 'a file, not a
  folder'."""
  return 'a file, not a folder' if folder.exists() else 'missing folder'


def _check_misnamed(folder: pathlib.Path, names: dict[str, str], problems: list[str]) -> None:
  """Appends a problem for each folder in `folder` named as one of `names` (key: lower case,
  without '_', '-' or spaces; value: the name) but not exactly ('Train', 'Ground_Truth'): it
  would not be read, and masks in it would be missing without a word."""
  for entry in image_files.entries(folder, problems):
    name = names.get(''.join(c for c in entry.name.lower() if c not in '_- '))
    if name and entry.name != name and entry.is_dir():
      problems.append(f'{folder / entry.name}: not read; name the folder {name}/ (lower case)')


def _scan_train(root: pathlib.Path, problems: list[str]) -> tuple[Entry, ...]:
  """The entries of train/good/; train/ may hold nothing else."""
  train_dir = root / TRAIN
  good_dir = train_dir / GOOD
  if not good_dir.is_dir():
    raise errors.DataError(f'{good_dir}: {_missing(good_dir)}; the defect-free training images '
                           f'must be in {TRAIN}/{GOOD}/ under {root}.')
  for entry in image_files.entries(train_dir, problems):
    if entry.name != GOOD:
      problems.append(f'{train_dir / entry.name}: unexpected entry; {TRAIN}/ may only hold '
                      f'{GOOD}/ (training images are defect-free)')
  train = tuple(Entry(f'{TRAIN}/{GOOD}/{n}', GOOD, None, True)
                for n in image_files.list_class_folder(good_dir, problems))
  if not train and not problems:
    raise errors.DataError(f'{good_dir}: holds no images (expected at least one training image).')
  return train


def _scan_defect(root: pathlib.Path, defect: str, names: list[str], masks_required: bool,
                 problems: list[str]) -> tuple[list[Entry], list[str]]:
  """The entries of test/<defect>/ (images `names`) with their masks, and the unused masks (each
  with the image it would be the mask of)."""
  class_dir, gt_dir = root / TEST / defect, root / GROUND_TRUTH / defect
  if not gt_dir.is_dir():
    if masks_required and names:
      problems.append(f'{gt_dir}: missing mask folder for the {len(names)} images of {class_dir}')
    return [Entry(f'{TEST}/{defect}/{n}', defect, None, False) for n in names], []
  masks = _find_masks(gt_dir, problems)
  stems = collections.Counter(os.path.splitext(n)[0] for n in names)
  test = []
  for name in names:
    stem = os.path.splitext(name)[0]
    if stems[stem] > 1:
      problems.append(f'{class_dir / name}: several images share the stem {stem!r}, so the mask '
                      f'{stem}{MASK_SUFFIX}.* is ambiguous')
    elif stem not in masks:
      problems.append(f'{class_dir / name}: no mask {gt_dir / (stem + MASK_SUFFIX)}.png '
                      '(or another image extension)')
    else:
      test.append(Entry(f'{TEST}/{defect}/{name}', defect,
                        f'{GROUND_TRUTH}/{defect}/{masks[stem]}', True))
  return test, [(gt_dir / m, class_dir / f'{s}.png') for s, m in masks.items() if s not in stems]


def _scan_test(root: pathlib.Path, masks_required: bool, problems: list[str]) -> list[Entry]:
  """The entries of test/<defect_type>/ folders, sorted by path. A mask without its image is a
  problem when `masks_required` (MVTec AD: its image was deleted or renamed), else a warning."""
  test_dir, gt_root = root / TEST, root / GROUND_TRUTH
  if not test_dir.is_dir():
    raise errors.DataError(f'{test_dir}: {_missing(test_dir)}; test images must be in '
                           f'{TEST}/<defect_type>/ ({TEST}/{GOOD}/ for defect-free ones).')
  test, orphans = [], []
  for entry in image_files.entries(test_dir, problems):
    if not entry.is_dir():
      problems.append(f'{test_dir / entry.name}: unexpected file; {TEST}/ may only hold '
                      '<defect_type>/ folders')
      continue
    if entry.name == OVERALL:
      problems.append(f'{test_dir / entry.name}: {OVERALL!r} names the metrics of all test images '
                      'together, not a defect type; rename the folder')
      continue
    if entry.name != GOOD and entry.name.lower() == GOOD:  # 'Good' would be read as a defect.
      problems.append(f'{test_dir / entry.name}: defect-free test images must be in {TEST}/{GOOD}/ '
                      '(lower case); rename the folder')
      continue
    names = image_files.list_class_folder(test_dir / entry.name, problems)
    if not names:
      _warn(f'{test_dir / entry.name}: empty class folder, ignored')
    if entry.name == GOOD:
      test += [Entry(f'{TEST}/{GOOD}/{n}', GOOD, None, True) for n in names]
      continue
    entries, unused = _scan_defect(root, entry.name, names, masks_required, problems)
    test += entries
    orphans += unused
  if gt_root.is_dir():
    for entry in image_files.entries(gt_root, problems):
      if not (test_dir / entry.name).is_dir() or entry.name == GOOD:
        _warn(f'{gt_root / entry.name}: no defective test folder {TEST}/{entry.name}/ for these '
              'masks; ignored')
  if orphans and masks_required:
    problems += [f'{mask}: a mask without its image (expected {image}, or another image '
                 'extension)' for mask, image in orphans]
  elif orphans:
    _warn(f'{len(orphans)} mask(s) without an image are ignored, e.g. '
          f'{", ".join(str(mask) for mask, _ in orphans[:3])}')
  return test


def scan_layout(root: str | os.PathLike, *, masks_required: bool) -> Layout:
  """Lists and structurally checks a folder in the MVTec AD layout (no image is decoded here).

  Args:
    root: the dataset folder holding train/, test/ and optionally ground_truth/.
    masks_required: every defective test image must have a mask, and every mask its image (MVTec
      AD). When False, a defect type without a ground_truth/<defect> folder gets has_mask False;
      one WITH that folder must still have a mask for each of its images (a mask without its
      image is warned of and ignored).

  Returns:
    The Layout, entries sorted by path.

  Raises:
    DataError naming the folder or file: missing root, train/good or test; an empty train/good;
    a non-image file, a subfolder or a broken symlink in a class folder; a defective image
    without its mask (or, with `masks_required`, a mask without its image).
  """
  root = image_files.directory(root, 'dataset folder')
  problems = []
  _check_misnamed(root, {TRAIN: TRAIN, TEST: TEST, 'groundtruth': GROUND_TRUTH}, problems)
  if (root / TRAIN).is_dir():
    _check_misnamed(root / TRAIN, {GOOD: GOOD}, problems)
  image_files.raise_problems(problems, root)  # Before 'missing folder' for a misnamed one.
  train = _scan_train(root, problems)
  test = _scan_test(root, masks_required, problems)
  image_files.raise_problems(problems, root)
  if not test:
    raise errors.DataError(f'{root / TEST}: holds no test images.')
  return Layout(root=root, train=train, test=tuple(test))


def fingerprint(layout: Layout) -> str:
  """sha256 hex digest of the layout's absolute root and (relative path, size, mtime) of its files.

  Cheap (stat only); it changes when a file is added, removed, renamed, rewritten or touched.
  """
  # scan_layout listed no broken symlink.
  return builder_lib.files_fingerprint(layout.root, [layout.root / r for r in layout.files()])


def validate_images(layout: Layout) -> int:
  """Fully decodes every image and mask of `layout` and checks each mask's size against its image.

  Returns:
    The dataset's channel count: 1 if every image (masks aside) is grayscale, else 3.

  Raises:
    DataError listing every corrupt/truncated/unreadable file and every size mismatch.
  """
  entries = layout.train + layout.test
  files = [(layout.root / e.relpath, False) for e in entries]
  files += [(layout.root / e.mask_relpath, True) for e in entries if e.mask_relpath]
  logging.info('Decoding %d files under %s to validate them.', len(files), layout.root)
  info, problems = image_files.check_files(files)
  for e in entries:
    image, mask = layout.root / e.relpath, e.mask_relpath and layout.root / e.mask_relpath
    if mask and image in info and mask in info and info[image][0] != info[mask][0]:
      turned = (' as shown (images and masks are read turned by their EXIF orientation tag: draw '
                'the mask on the image as a viewer shows it)'
                if info[image][0] == info[mask][0][::-1] else '')
      problems.append(f'{mask}: mask size {info[mask][0]} (width, height) differs from its image '
                      f'{image} of size {info[image][0]}{turned}')
  image_files.raise_problems(problems, layout.root)
  return 1 if all(info[layout.root / e.relpath][1] == 1 for e in entries) else 3


def generate_examples(layout: Layout, split: str, channels: int) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) of a layout's split in the `features.py` format.

  image: PNG of uint8 [H, W, channels] at native size; mask: PNG of uint8 [H, W, 1] in {0, 1} (all
  zero without a mask file); filename and key: the image's path relative to the root.
  """
  coverage = collections.defaultdict(list)  # Defect type -> the fraction each mask marks.
  for e in layout.split(split):
    image, shape = image_files.image_png(layout.root / e.relpath, channels)
    if e.mask_relpath:
      mask = image_io.read_mask(layout.root / e.mask_relpath).astype(np.uint8)[..., None]
      coverage[e.defect_type].append(float(mask.mean()))
    else:
      mask = np.zeros(shape + (1,), np.uint8)
    yield features.example(e.relpath, image, image_files.encode_png(mask), e.defect_type,
                           e.has_mask)
  _warn_unlikely_masks(layout.root, coverage)


def _warn_unlikely_masks(root: pathlib.Path, coverage: dict[str, list[float]]) -> None:
  """Warns about a defect type none of whose masks marks a pixel (its pixel metrics are n/a) or
  each of whose masks marks most of its image (drawn dark on white?): likely mistakes, though
  masks are read as they are (an empty mask is valid: Magnetic Tile has a few)."""
  for defect, fractions in sorted(coverage.items()):
    folder = root / GROUND_TRUTH / defect
    if max(fractions) == 0:
      _warn(f'{folder}: none of its {len(fractions)} masks marks a defect pixel (values > 0), so '
            f'the pixel metrics of {defect!r} are n/a')
    elif min(fractions) > 0.5:
      _warn(f'{folder}: each of its {len(fractions)} masks marks more than half of its image as '
            'defect (values > 0); if the defects are drawn dark on white, invert the masks')
