"""`mvtec_ad`: MVTec AD (Bergmann et al., CVPR 2019) from a local copy; one config per category.

MVTec AD cannot be downloaded automatically (its licence, CC BY-NC-SA 4.0, is accepted through a
form), so `cfg.manual_dir` must be the folder holding the extracted category folders (see
`MANUAL_DOWNLOAD_INSTRUCTIONS`). Official layout of a category:

  <category>/train/good/*.png                          defect-free training images
  <category>/test/<defect>/*.png                       test images, 'good' among the defects
  <category>/ground_truth/<defect>/<stem>_mask.png     0/255 mask of every defective test image

Splits `train` (good only) and `test`, examples as in `features.py`:
  image        uint8 [H, W, C] at native size (700-1024 px a side); C = 1 for grid, screw and
               zipper, else 3 (a stray image of the other kind is converted)
  mask         uint8 [H, W, 1] in {0, 1}; all zero for test/good
  label        0 good, 1 defective; defect_type = the test folder's name
  filename     path relative to the category, e.g. 'test/crack/000.png'
  has_mask     True

Before anything is written, the copy is compared with the official per-folder file counts
(`OFFICIAL_COUNTS`; `cfg.check_counts = False` builds a partial copy anyway, with a warning), every
defective image must have its mask and every mask its image, and every file is fully decoded (see
`mvtec_layout`).
"""

import dataclasses
import os
import pathlib

from absl import logging
import tensorflow_datasets as tfds

from vivano_jax import errors
from vivano_jax.datasets import builder as builder_lib
from vivano_jax.datasets import image_files
from vivano_jax.datasets import mvtec_layout
from vivano_jax.datasets.features import example_features

HOMEPAGE = 'https://www.mvtec.com/company/research/datasets/mvtec-ad'
GRAYSCALE_CATEGORIES = ('grid', 'screw', 'zipper')

# Official number of images per folder. Sources: the train counts are Table 1 of Bergmann et al.,
# "MVTec AD - A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection", CVPR 2019; the
# per-defect test counts are those of the released archive (mvtec_anomaly_detection.tar.xz), as
# listed by public per-defect evaluation reports. They add up to the published totals of 3629 train
# and 1725 test images; test/good has no masks, every other test folder one mask per image.
OFFICIAL_COUNTS = {
    'bottle': {'train/good': 209, 'test/good': 20, 'test/broken_large': 20,
               'test/broken_small': 22, 'test/contamination': 21},
    'cable': {'train/good': 224, 'test/good': 58, 'test/bent_wire': 13, 'test/cable_swap': 12,
              'test/combined': 11, 'test/cut_inner_insulation': 14,
              'test/cut_outer_insulation': 10, 'test/missing_cable': 12, 'test/missing_wire': 10,
              'test/poke_insulation': 10},
    'capsule': {'train/good': 219, 'test/good': 23, 'test/crack': 23, 'test/faulty_imprint': 22,
                'test/poke': 21, 'test/scratch': 23, 'test/squeeze': 20},
    'carpet': {'train/good': 280, 'test/good': 28, 'test/color': 19, 'test/cut': 17,
               'test/hole': 17, 'test/metal_contamination': 17, 'test/thread': 19},
    'grid': {'train/good': 264, 'test/good': 21, 'test/bent': 12, 'test/broken': 12,
             'test/glue': 11, 'test/metal_contamination': 11, 'test/thread': 11},
    'hazelnut': {'train/good': 391, 'test/good': 40, 'test/crack': 18, 'test/cut': 17,
                 'test/hole': 18, 'test/print': 17},
    'leather': {'train/good': 245, 'test/good': 32, 'test/color': 19, 'test/cut': 19,
                'test/fold': 17, 'test/glue': 19, 'test/poke': 18},
    'metal_nut': {'train/good': 220, 'test/good': 22, 'test/bent': 25, 'test/color': 22,
                  'test/flip': 23, 'test/scratch': 23},
    'pill': {'train/good': 267, 'test/good': 26, 'test/color': 25, 'test/combined': 17,
             'test/contamination': 21, 'test/crack': 26, 'test/faulty_imprint': 19,
             'test/pill_type': 9, 'test/scratch': 24},
    'screw': {'train/good': 320, 'test/good': 41, 'test/manipulated_front': 24,
              'test/scratch_head': 24, 'test/scratch_neck': 25, 'test/thread_side': 23,
              'test/thread_top': 23},
    'tile': {'train/good': 230, 'test/good': 33, 'test/crack': 17, 'test/glue_strip': 18,
             'test/gray_stroke': 16, 'test/oil': 18, 'test/rough': 15},
    'toothbrush': {'train/good': 60, 'test/good': 12, 'test/defective': 30},
    'transistor': {'train/good': 213, 'test/good': 60, 'test/bent_lead': 10, 'test/cut_lead': 10,
                   'test/damaged_case': 10, 'test/misplaced': 10},
    'wood': {'train/good': 247, 'test/good': 19, 'test/color': 8, 'test/combined': 11,
             'test/hole': 10, 'test/liquid': 10, 'test/scratch': 21},
    'zipper': {'train/good': 240, 'test/good': 32, 'test/broken_teeth': 19, 'test/combined': 16,
               'test/fabric_border': 17, 'test/fabric_interior': 16, 'test/rough': 17,
               'test/split_teeth': 18, 'test/squeezed_teeth': 16},
}
CATEGORIES = tuple(OFFICIAL_COUNTS)

_ALL, _NONE = dict(hflip=True, vflip=True, rot90=True), dict(hflip=False, vflip=False, rot90=False)
# Training augmentation per category, for the configs: only transforms that map a good part onto
# another good part.
AUGMENT = {
    # Textures: no preferred orientation.
    'carpet': _ALL, 'grid': _ALL, 'leather': _ALL, 'tile': _ALL, 'wood': _ALL,
    'bottle': _ALL,  # Seen from above, round.
    'hazelnut': _ALL,  # Seen from above, lies in any orientation.
    'cable': _NONE,  # The three wires' colour order is fixed ('cable_swap' is a defect).
    'capsule': _NONE,  # Printed '500': mirrored or turned print is a 'faulty_imprint'.
    'pill': _NONE,  # Printed 'FF' and a fixed pose.
    'transistor': _NONE,  # Pose defines the part: 'misplaced' is a defect.
    'metal_nut': dict(hflip=False, vflip=False, rot90=True),  # Mirror = the 'flip' defect; good
                                                              # nuts are rotated arbitrarily.
    'screw': dict(hflip=False, vflip=False, rot90=True),  # Any pose; a mirror inverts the thread.
    'toothbrush': dict(hflip=True, vflip=False, rot90=False),  # Upright, left-right symmetric.
    'zipper': dict(hflip=True, vflip=True, rot90=False),  # Vertical, symmetric both ways.
}


def category(arg) -> str:
  """The category named by a config argument; '' when none is given (the run then takes it from
  dataset.manual_dir: `resolve_config`)."""
  if arg in (None, ''):
    return ''
  if arg not in CATEGORIES:
    raise errors.UsageError(f'MVTec AD category must be one of {CATEGORIES}, got {arg!r}')
  return arg


def _identify(folder: pathlib.Path) -> str | None:
  """The category whose folder `folder` (holding train/) is: by its name, else the one category
  whose official defect folders include all of its test/ folders (hidden ones aside, as the
  builder skips them)."""
  if folder.name in CATEGORIES:
    return folder.name
  test = folder / mvtec_layout.TEST
  defects = ({p.name for p in test.iterdir() if p.is_dir() and not image_files.is_ignored(p.name)}
             - {mvtec_layout.GOOD} if test.is_dir() else set())
  matches = [c for c in CATEGORIES
             if defects and defects <= {k.split('/')[1] for k in OFFICIAL_COUNTS[c]}]
  return matches[0] if len(matches) == 1 else None


# A folder in this layout that is not a copy of an MVTec AD category is read by the folder builder.
OWN_PRODUCT = 'read a product of your own in this layout with --config.dataset.name=folder'


def find_category(manual_dir: pathlib.Path) -> str:
  """The category in `manual_dir` when the config names none: manual_dir is one category's folder
  (named after it, or recognised by its defect folders), or holds exactly one category folder."""
  if (manual_dir / mvtec_layout.TRAIN).is_dir():
    found = _identify(manual_dir)
    if found is None:
      raise errors.UsageError(
          f'dataset.manual_dir={manual_dir} holds train/, but neither its name nor its test/ '
          'folders are those of an MVTec AD category: name the category in the config argument, '
          f'e.g. --config=configs/mvtec_ad.py:bottle, or {OWN_PRODUCT}')
    return found
  present = [c for c in CATEGORIES if (manual_dir / c).is_dir()]
  if len(present) > 1:
    raise errors.UsageError(
        f'dataset.manual_dir={manual_dir} holds {len(present)} MVTec AD categories '
        f'({", ".join(present)}): choose one with the config argument, e.g. '
        f'--config=configs/mvtec_ad.py:{present[0]}')
  if not present:
    raise errors.DataError(f'{manual_dir}: no MVTec AD category folder in dataset.manual_dir; '
                           f'it must be {EXPECTED}, or one category\'s folder.')
  return present[0]


def category_root(manual_dir: pathlib.Path, category: str) -> pathlib.Path:
  """`category`'s folder: manual_dir/<category>, or manual_dir itself when it holds train/ and is
  not recognised as another category's (the count check then says how it differs from this one's:
  a renamed copy that lacks a defect folder is recognised as none)."""
  if (not (manual_dir / category).is_dir() and (manual_dir / mvtec_layout.TRAIN).is_dir()
      and _identify(manual_dir) in (category, None)):
    return manual_dir
  return manual_dir / category


def resolve_config(config) -> None:
  """Names the category of a config that leaves it to the data (`configs/mvtec_ad.py` without an
  argument: dataset.name 'mvtec_ad'), in place: dataset.name becomes 'mvtec_ad/<category>'. Each
  dataset.augment field still None then takes the category's `AUGMENT` value, also when the
  category came as --config.dataset.name=mvtec_ad/<category> (it was trained with none)."""
  if config.dataset.name == 'mvtec_ad':
    found = find_category(builder_lib.manual_root(config.dataset, EXPECTED))
    config.dataset.name = f'mvtec_ad/{found}'
    logging.info('MVTec AD category %r, found in dataset.manual_dir', found)
  for field, value in AUGMENT.get(config.dataset.name.split('/', 1)[-1], {}).items():
    if config.dataset.augment.get(field) is None:
      config.dataset.augment[field] = value


MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MVTec AD cannot be downloaded automatically: accept its licence (CC BY-NC-SA 4.0) at
{HOMEPAGE} and download mvtec_anomaly_detection.tar.xz (or single categories).
Extract it and set dataset.manual_dir to the folder that holds the category folders, e.g.
  <manual_dir>/bottle/train/good/000.png
  <manual_dir>/bottle/test/broken_large/000.png
  <manual_dir>/bottle/ground_truth/broken_large/000_mask.png
"""
EXPECTED = ('the folder holding the extracted MVTec AD category folders (<category>/train/good/, '
            '<category>/test/<defect>/, <category>/ground_truth/<defect>/<stem>_mask.png), '
            f'downloaded from {HOMEPAGE}')

_CITATION = """\
@inproceedings{bergmann2019mvtec,
  title={MVTec AD -- A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection},
  author={Bergmann, Paul and Fauser, Michael and Sattlegger, David and Steger, Carsten},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={9592--9600},
  year={2019}
}"""


def count_problems(layout: mvtec_layout.Layout, category: str) -> list[str]:
  """Differences between a category copy and `OFFICIAL_COUNTS`, one line per folder."""
  official, actual = OFFICIAL_COUNTS[category], layout.counts()
  problems = []
  for folder, expected in official.items():
    found = actual.get(folder, 0)
    if found < expected:
      problems.append(f'{layout.root / folder}: {expected - found} image(s) short '
                      f'({found} of {expected})')
    elif found > expected:
      problems.append(f'{layout.root / folder}: {found - expected} image(s) more than the official '
                      f'{expected}')
  for folder in sorted(set(actual) - set(official)):
    problems.append(f'{layout.root / folder}: not an official {category} folder '
                    f'({actual[folder]} images)')
  return problems


def validate_category(root: str | os.PathLike, category: str,
                      check_counts: bool = True) -> mvtec_layout.Layout:
  """Scans and fully validates one extracted category folder; nothing is written.

  Raises:
    DataError naming the folder or file: layout problems, a defective image without its mask or
    a mask without its image, a corrupt image, a mask of the wrong size, or (with `check_counts`)
    a count that differs from `OFFICIAL_COUNTS` (the message lists every short folder and by how
    many).
  """
  layout = mvtec_layout.scan_layout(root, masks_required=True)
  problems = count_problems(layout, category)
  if problems and check_counts:
    total, expected = sum(layout.counts().values()), sum(OFFICIAL_COUNTS[category].values())
    own = (f'; if it is not a copy of MVTec AD {category}, {OWN_PRODUCT}'
           if layout.root.name != category else '')  # Taken for it by its defect folders.
    image_files.raise_problems(
        problems + [f'{total} of the official {expected} images found; set dataset.check_counts = '
                    f'False to build from an incomplete copy anyway{own}'],
        f'mvtec_ad/{category} (file counts differ from the official release)')
  for problem in problems:
    logging.warning('mvtec_ad/%s: %s', category, problem)
  mvtec_layout.validate_images(layout)  # Stray channel counts are fine: converted when read.
  return layout


@dataclasses.dataclass(eq=False)
class MvtecAdConfig(tfds.core.BuilderConfig):
  """One MVTec AD category; `channels` is 1 (grayscale category) or 3."""
  channels: int = 3


class MvtecAd(tfds.core.GeneratorBasedBuilder):
  """MVTec AD, one category per config, read from `manual_dir/<category>`."""

  name = 'mvtec_ad'
  VERSION = tfds.core.Version('1.0.1')
  RELEASE_NOTES = {'1.0.0': 'Initial release: native-size images, 0/1 masks.',
                   '1.0.1': 'TIFFs turned by their orientation tag read as shown.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      MvtecAdConfig(name=c, description=f'MVTec AD category {c!r}.',
                    channels=1 if c in GRAYSCALE_CATEGORIES else 3)
      for c in CATEGORIES
  ]

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.validated_layout = None  # Set by make_builder so that files are not decoded twice.

  def _info(self) -> tfds.core.DatasetInfo:
    return builder_lib.LocalDatasetInfo(
        builder=self,
        description=__doc__,
        features=example_features(self.builder_config.channels),
        homepage=HOMEPAGE,
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    category = self.builder_config.name
    root = category_root(pathlib.Path(os.fspath(dl_manager.manual_dir)).resolve(), category)
    layout = self.validated_layout
    if layout is None or layout.root != root:
      layout = validate_category(root, category)
    self.info.metadata['made_from'] = str(layout.root)  # What make_builder checks a reuse by.
    self.info.metadata['fingerprint'] = mvtec_layout.fingerprint(layout)
    return {split: self._generate_examples(layout, split) for split in ('train', 'test')}

  def _generate_examples(self, layout, split):
    yield from mvtec_layout.generate_examples(layout, split, self.builder_config.channels)


def make_builder(cfg, data_dir=None) -> tfds.core.DatasetBuilder:
  """The prepared builder for cfg.name = 'mvtec_ad/<category>', read from cfg.manual_dir.

  A dataset already prepared in `data_dir` from the same files (`mvtec_layout.fingerprint`: the
  folder's path and each file's name, size and time; listing only) is returned as is; one prepared
  from another copy of the category, or from these files before they changed, is prepared again
  (it was used as it was: a run on a full copy trained on an earlier trial's subset). Without
  manual_dir a prepared dataset is used as it is. `cfg.check_counts` (default True) compares the
  copy with the official file counts.
  """
  if cfg.name == 'mvtec_ad':  # No category named: the one in manual_dir.
    cfg = cfg.copy_and_resolve_references()
    cfg.name = f'mvtec_ad/{find_category(builder_lib.manual_root(cfg, EXPECTED))}'
  builder_lib.check_name(cfg.name, builder_lib.config_names(MvtecAd))
  category = cfg.name.split('/', 1)[1]
  builder = MvtecAd(config=category, data_dir=data_dir)
  if builder.is_prepared() and not str(cfg.get('manual_dir') or '').strip():
    return builder
  manual_dir = builder_lib.manual_root(cfg, EXPECTED)
  root = category_root(manual_dir, category)
  if not root.is_dir():
    hint = f'dataset.manual_dir must be {EXPECTED}, or the category\'s own folder'
    if (manual_dir / mvtec_layout.TRAIN).is_dir():
      other = _identify(manual_dir)  # Another category's: else root is manual_dir.
      hint = (f'{manual_dir} is the folder of another category ({other}): dataset.manual_dir '
              f"must be the folder holding the category folders, or {category}'s own folder")
    raise errors.DataError(f'{root}: missing category folder; {hint}.')
  if builder.is_prepared():
    made = mvtec_layout.fingerprint(mvtec_layout.scan_layout(root, masks_required=True))
    if not builder_lib.remove_if_made_elsewhere(builder, root, made):
      return builder
    builder = MvtecAd(config=category, data_dir=data_dir)
  builder.validated_layout = validate_category(root, category, cfg.get('check_counts', True))
  builder_lib.prepare(builder, manual_dir)
  return builder
