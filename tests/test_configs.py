"""The dataset configs in configs/: each loads through config_flags with its `:arg`, selects the
intended dataset and class, has the intended sizes, and the *_paper.py variants have the paper's
Section 4.1 numbers. The reduced variants build a model whose reconstruction matches the input
(shapes only: jax.eval_shape, no training). config_files reads configs and overrides as
config_flags (main's `--config=` flag) does, checked against it and against hand-written configs.
The sweeps in sweeps/ expand, the data folders given on the command line reaching the right runs."""

import os
import re

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import pytest

from vivano_jax import config_checks
from vivano_jax import config_files
from vivano_jax import errors
from vivano_jax import model as model_lib
from vivano_jax import sweep
from tests.conftest import REPO, load_config

DATASET_CONFIGS = ('magnetic_tile', 'mnist', 'cifar10', 'mvtec_ad')
CIFAR10 = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
MVTEC = ('carpet', 'grid', 'leather', 'tile', 'wood', 'bottle', 'cable', 'capsule', 'hazelnut',
         'metal_nut', 'pill', 'screw', 'toothbrush', 'transistor', 'zipper')


def load(name: str, arg=None, overrides=()):
  """configs/<name>.py[:arg] exactly as `--config=` reads it, with `--config.<field>=<text>`
  flags."""
  path = str(REPO / 'configs' / f'{name}.py') + (f':{arg}' if arg is not None else '')
  argv = ['test', f'--config={path}', *overrides]
  values = flags.FlagValues()
  # sys_argv: the overrides to define are looked for there (by default in sys.argv).
  config_flags.DEFINE_config_file('config', None, flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def check_paper(config):
  assert config.dataset.image_size == 512
  assert config.dataset.channels == 3
  assert (config.model.patch_size, config.model.width, config.model.depth) == (64, 512, 6)
  assert (config.model.num_heads, config.model.mlp_dim) == (8, 1024)
  assert config.model.encoder == 'vit' and config.model.variational
  assert config.train.batch_size == 16
  assert config.train.learning_rate == 1e-5
  assert (config.train.num_epochs, config.train.num_steps) == (200, 0)
  # One stated learning rate, nothing the paper does not mention: constant, Adam, no clipping.
  assert config.train.schedule == 'constant'
  assert config.train.weight_decay == 0.0 and config.train.grad_clip_norm == 0.0
  assert not any(config.dataset.augment.values())  # The paper describes no augmentation.
  assert config.score.smoothing_sigma == 0.0  # Section 4.3: bilinear upsampling only.


def output_shape(config):
  s, c = config.dataset.image_size, config.dataset.channels
  model = model_lib.create_model(config)
  x = jnp.zeros((2, s, s, c), jnp.float32)
  rngs = {'params': jax.random.PRNGKey(0), 'latent': jax.random.PRNGKey(1)}
  variables = jax.eval_shape(lambda: model.init(rngs, x))
  out = jax.eval_shape(lambda v: model.apply(v, x, rngs={'latent': rngs['latent']}), variables)
  return out['recon'].shape


@pytest.mark.parametrize('name', [n + v for n in DATASET_CONFIGS for v in ('', '_paper')])
def test_loads_with_default_argument(name):
  config = load(name)
  assert config.dataset.name
  assert config.model.patch_size & (config.model.patch_size - 1) == 0  # Decoder: power of two.
  assert config.dataset.image_size % config.model.patch_size == 0


@pytest.mark.parametrize('name', sorted(p.stem for p in (REPO / 'configs').glob('*.py')))
def test_every_config_has_exactly_the_default_fields(name):
  config_checks.check_fields(load(name))  # A typo in a config file would be a field of its own.


def test_a_misspelt_or_missing_field_is_named():
  config = load_config('tiny')
  config.train.learning_rat = 1e-3
  del config.loss['kl_weight']
  with pytest.raises(errors.UsageError, match=re.escape(
      'the config has no field train.learning_rat (did you mean train.learning_rate?) and lacks '
      'loss.kl_weight; build configs on config_defaults.base_config()')):
    config_checks.check_all(config)


@pytest.mark.parametrize('name', ['magnetic_tile', 'magnetic_tile_paper'])
def test_magnetic_tile(name):
  config = load(name, 'ignored')
  assert config.dataset.name == 'folder'
  assert config.dataset.manual_dir == ''  # The user's to give: no path of this machine in a config.


@pytest.mark.parametrize('variant', ['', '_paper'])
@pytest.mark.parametrize('digit', range(10))
def test_mnist_digit(variant, digit):
  config = load('mnist' + variant, digit)
  assert config.dataset.name == f'mnist_one_class/{digit}'
  assert not any(config.dataset.augment.values())  # A turned 6 is a 9.


@pytest.mark.parametrize('variant', ['', '_paper'])
@pytest.mark.parametrize('arg,name', [*((str(i), c) for i, c in enumerate(CIFAR10)),
                                      ('cat', 'cat'), ('truck', 'truck')])
def test_cifar10_class(variant, arg, name):
  config = load('cifar10' + variant, arg)
  assert config.dataset.name == f'cifar10_one_class/{name}'
  assert config.dataset.channels == 3
  expected = dict(hflip=not variant, vflip=False, rot90=False)  # The paper variant: none.
  assert config.dataset.augment.to_dict() == expected


@pytest.mark.parametrize('variant', ['', '_paper'])
@pytest.mark.parametrize('category', MVTEC)
def test_mvtec_category(variant, category):
  config = load('mvtec_ad' + variant, category)
  assert config.dataset.name == f'mvtec_ad/{category}'
  aug = config.dataset.augment
  if variant == '_paper':
    assert not any(aug.values())
    return
  if category in ('carpet', 'grid', 'leather', 'tile', 'wood', 'bottle', 'hazelnut'):
    assert aug.hflip and aug.vflip and aug.rot90
  if category in ('cable', 'capsule', 'pill', 'transistor'):
    assert not (aug.hflip or aug.vflip or aug.rot90)
  if category in ('metal_nut', 'screw'):  # Mirroring is a defect ('flip') or flips the thread.
    assert not (aug.hflip or aug.vflip)


@pytest.mark.parametrize('name,arg', [('mnist', 'x'), ('mnist', '10'), ('cifar10', 'cow'),
                                      ('cifar10_paper', '10'), ('mvtec_ad', 'carpets'),
                                      ('mvtec_ad_paper', 'tyre')])
def test_bad_argument_is_an_error(name, arg):
  with pytest.raises(Exception, match='must be'):
    load(name, arg)


@pytest.mark.parametrize('name,arg', [('magnetic_tile_paper', None), ('mnist_paper', 4),
                                      ('cifar10_paper', 'dog'), ('mvtec_ad_paper', 'screw')])
def test_paper_variants_have_the_papers_numbers(name, arg):
  check_paper(load(name, arg))


def test_paper_scores():
  # Section 4.3: MVTec AD (and the magnetic tile, same protocol) scored by the mixture NLL...
  for name in ('magnetic_tile_paper', 'mvtec_ad_paper'):
    config = load(name)
    assert (config.score.image, config.score.pixel) == ('nll_max', 'nll')
  # ...Section 4.4: MNIST and CIFAR-10 'using only the reconstruction loss'.
  for name in ('mnist_paper', 'cifar10_paper'):
    assert load(name).score.image == 'recon'


@pytest.mark.parametrize('name,size,channels,patch', [('magnetic_tile', 128, 1, 16),
                                                      ('magnetic_tile_plain', 128, 1, 16),
                                                      ('mnist', 32, 1, 8), ('cifar10', 32, 3, 8),
                                                      ('mvtec_ad', 128, 3, 16)])
def test_reduced_variants_are_small_and_build(name, size, channels, patch):
  config = load(name)
  assert (config.dataset.image_size, config.dataset.channels) == (size, channels)
  assert config.model.patch_size == patch
  assert config.model.width <= 128 and config.model.depth <= 3
  # Minutes on 2 CPU cores: the longest, magnetic_tile (1500 steps), takes about 11 (RESULTS 1g).
  assert 0 < config.train.num_steps <= 1500
  assert output_shape(config) == (2, size, size, channels)
  # The recipe with the segmenter trains it on synthetic anomalies; the plain one has neither.
  assert (config.model.segmenter_features > 0) == (config.train.synthetic_anomalies > 0)


# --------------------------------------------------------------------------------------------------
# config_files: loading and overrides.


@pytest.mark.parametrize('name,arg', [
    *((n, None) for n in ('default', 'paper', 'tiny', 'magnetic_tile', 'magnetic_tile_paper',
                          'magnetic_tile_plain')),
    *((n + v, a) for n, a in (('mnist', 7), ('cifar10', 'dog'), ('mvtec_ad', 'screw'))
      for v in ('', '_paper'))])
def test_load_config_matches_config_flags(name, arg):
  expected = load(name, arg).to_dict()
  assert load_config(name, arg).to_dict() == expected
  path = str(REPO / 'configs' / f'{name}.py')
  spelled = config_files.load_config(path + ('' if arg is None else f':{arg}'))
  assert spelled.to_dict() == expected


def test_cifar10_paper_is_mnist_paper_with_the_class():
  # Built on configs/mnist_paper.py (loaded by its path, whatever the working directory).
  cifar, mnist = load('cifar10_paper', 'cat').to_dict(), load('mnist_paper').to_dict()
  assert cifar['dataset'].pop('name') == 'cifar10_one_class/cat'
  assert mnist['dataset'].pop('name') == 'mnist_one_class/0'
  assert cifar == mnist


def test_load_config_errors(tmp_path):
  with pytest.raises(errors.DataError, match=r'config file .*nope\.py does not exist'):
    config_files.load_config(str(tmp_path / 'nope.py'))
  (tmp_path / 'empty.py').write_text('X = 1\n')
  with pytest.raises(errors.DataError, match=r'empty\.py defines no get_config\(\) function'):
    config_files.load_config(str(tmp_path / 'empty.py'))
  (tmp_path / 'broken.py').write_text('import no_such_module_here\n')
  with pytest.raises(errors.DataError, match='broken.py failed to load: ModuleNotFoundError'):
    config_files.load_config(str(tmp_path / 'broken.py'))
  with pytest.raises(ValueError, match='must be'):  # get_config's own error, unchanged.
    config_files.load_config(str(REPO / 'configs' / 'mnist.py:10'))


def _hand_written(**changes):
  fields = dict(steps=100, rate=0.5, flag=True, sizes=(1, 2), name='a', sub={'depth': 2})
  return ml_collections.ConfigDict(fields | changes)


def test_apply_overrides_parses_text_by_the_fields_type():
  config = _hand_written()
  out = config_files.apply_overrides(config, {
      'steps': '300', 'rate': '1e-3', 'flag': 'false', 'sizes': '(8, 16)', 'name': '7',
      'sub.depth': '4'})
  assert out is config
  expected = _hand_written(steps=300, rate=1e-3, flag=False, sizes=(8, 16), name='7',
                           sub={'depth': 4})
  assert config.to_dict() == expected.to_dict()
  assert [type(config[f]) for f in ('steps', 'rate', 'flag', 'sizes', 'name')] == [
      int, float, bool, tuple, str]
  # absl's spellings of booleans, an int for a float field, one value for a tuple field.
  config_files.apply_overrides(config, {'flag': '1', 'rate': '2', 'sizes': '5'})
  assert config.to_dict() == _hand_written(steps=300, rate=2.0, flag=True, sizes=(5,), name='7',
                                           sub={'depth': 4}).to_dict()
  assert type(config.rate) is float
  # Values that are not text are set as they are; a locked config (as main's) takes them too.
  config.lock()
  config_files.apply_overrides(config, {'steps': 5, 'rate': 3, 'sizes': (4,), 'name': ''})
  assert config.to_dict() == _hand_written(steps=5, rate=3.0, flag=True, sizes=(4,), name='',
                                           sub={'depth': 4}).to_dict()


def test_apply_overrides_agrees_with_mains_flags():
  texts = {'train.batch_size': '16', 'train.learning_rate': '3e-4', 'model.variational': 'false',
           'export.splits': "('test',)", 'dataset.name': 'digits/3', 'dataset.manual_dir': ''}
  expected = load('tiny', overrides=[f'--config.{f}={t}' for f, t in texts.items()]).to_dict()
  assert config_files.apply_overrides(load_config('tiny'), texts).to_dict() == expected


@pytest.mark.parametrize('overrides,error,match', [
    ({'sub.dpeth': '1'}, config_files.UnknownFieldError,
     r"unknown config field 'sub\.dpeth' \(did you mean 'sub\.depth'\?\)"),
    ({'sub': '1'}, config_files.UnknownFieldError, r"unknown config field 'sub'"),
    ({'steps.x': 1}, config_files.UnknownFieldError, r"unknown config field 'steps\.x'"),
    ({'steps': 'many'}, errors.UsageError, r"field 'steps' cannot take 'many': .*--config\.steps"),
    ({'flag': 'maybe'}, errors.UsageError, r"field 'flag' cannot take 'maybe'"),
    ({'steps': 2.5}, errors.UsageError, r"field 'steps' cannot take 2\.5"),
])
def test_apply_overrides_errors_name_the_field(overrides, error, match):
  config = _hand_written()
  with pytest.raises(error, match=match):
    config_files.apply_overrides(config, overrides)
  assert config.to_dict() == _hand_written().to_dict()  # Nothing set by a refused override.


def test_configs_name_no_local_data_folder():
  # Paths of one machine (../shared/data) come from the command line, not from a config.
  for name in os.listdir(REPO / 'configs'):
    if name.endswith('.py'):
      config = load(name[:-3])
      assert 'shared' not in config.dataset.manual_dir and 'shared' not in config.dataset.data_dir


# --------------------------------------------------------------------------------------------------
# The sweeps in sweeps/, built on these configs.

SWEEPS = REPO / 'sweeps'


def test_repository_sweeps_expand_with_the_data_folders_given():
  folder = {'dataset.manual_dir': '/data/magnetic_tile'}
  recipe = sweep.load_sweep(str(SWEEPS / 'recipe.py'), folder)
  assert len(recipe.runs) == 27
  flags = {r.name: r.flags['dataset.manual_dir'] for r in recipe.runs}
  assert flags['name=folder,seed=0,synthetic_anomalies=0.5'] == '/data/magnetic_tile'
  assert flags['name=textures_brick,manual_dir=,seed=0,synthetic_anomalies=0.5'] == ''
  nll = sweep.load_sweep(str(SWEEPS / 'ablations_nll.py'), folder)
  assert {r.flags['dataset.manual_dir'] for r in nll.runs if r.flags['dataset.name'] == 'folder'
          } == {'/data/magnetic_tile'} and len(nll.runs) == 48
  # The brick ablations are the Magnetic Tile ones on textures/brick.
  tile = sweep.load_sweep(str(SWEEPS / 'ablations_magnetic_tile.py'), folder)
  brick = sweep.load_sweep(str(SWEEPS / 'ablations_brick.py'))
  assert [r.overrides for r in brick.runs] == [r.overrides for r in tile.runs]
  assert [r.name for r in brick.runs][:2] == ['seed=0', 'encoder=cnn,variational=False,seed=0']
  assert all(r.flags['dataset.name'] == 'textures/brick' for r in brick.runs)
  for name in ('cifar10', 'digits', 'example', 'mnist', 'textures'):
    assert sweep.load_sweep(str(SWEEPS / f'{name}.py')).runs
