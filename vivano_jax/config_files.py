"""Config files and `--config.<field>=<value>` overrides, read the way `python -m vivano_jax.main`
reads them, for the callers that do not parse main's flags: the sweep runner, configs built on
other configs, and the tests.

A config file is Python with `get_config()` returning an `ml_collections.ConfigDict`;
`load_config('configs/mnist.py:3')` is `--config=configs/mnist.py:3` (ml_collections passes what
follows the first ':' to get_config). An override names a field by its dotted path
('train.batch_size'); a value given as text is parsed against the field's current type by
ml_collections' own override parsers (the ones behind `--config.train.batch_size=16`), so a
sweep, a test and the command line read '16', 'false' or '(8, 16)' alike. Only the standard
library, absl and ml_collections: no JAX, so the sweep runner stays light.
"""

from collections.abc import Mapping
import copy
import difflib
import importlib.util
import os
import re
import types
from typing import Any, Callable

from absl import flags
import ml_collections
from ml_collections import config_flags

from vivano_jax import errors


class UnknownFieldError(errors.UsageError):
  """A dotted path that is not a field of the config (a section counts as unknown: one flag cannot
  replace it). `field` is the path; `hint` is " (did you mean 'x'?)" or ''."""

  def __init__(self, field: str, hint: str):
    super().__init__(f'unknown config field {field!r}{hint}')
    self.field = field
    self.hint = hint


def load_module(path: str, what: str = 'config file') -> types.ModuleType:
  """Executes the Python file `path` as a fresh module (not kept in sys.modules, so two files of
  the same name never shadow each other). A missing or broken file is a DataError naming `what`
  and the path."""
  if not os.path.isfile(path):
    raise errors.DataError(f'{what} {path} does not exist')
  name = f'_vivano_{what.replace(" ", "_")}_{abs(hash(os.path.abspath(path)))}'
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DataError(f'{what} {path} failed to load: {type(e).__name__}: {e}') from e
  return module


def load_function(path: str, function: str, what: str = 'config file') -> Callable[..., Any]:
  """The function `function` of the Python file `path` (see load_module)."""
  module = load_module(path, what)
  if not callable(getattr(module, function, None)):
    raise errors.DataError(f'{what} {path} defines no {function}() function')
  return getattr(module, function)


def load_config(path: str | os.PathLike, arg: Any = None, what: str = 'config file'
                ) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, unlocked, as `--config=path` or `--config=path:arg` gives it.

  `arg` (or the text after the first ':' of `path`) is passed to get_config; without either,
  get_config is called with no argument, as ml_collections does. Errors get_config raises for a
  bad argument (e.g. an unknown MNIST digit) propagate unchanged; `what` names the file in errors.
  """
  path = os.fspath(path)
  if arg is None and ':' in path:
    path, arg = path.split(':', 1)
  get_config = load_function(path, 'get_config', what)
  return get_config() if arg is None else get_config(arg)


def flatten(mapping: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'train': {'batch_size': 8}} or {'train.batch_size': 8} -> {'train.batch_size': 8}."""
  if isinstance(mapping, ml_collections.ConfigDict):
    mapping = mapping.to_dict()
  out = {}
  for key, value in mapping.items():
    path = f'{prefix}{key}'
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      out.update(flatten(value, path + '.'))
    else:
      out[path] = value
  return out


def get_field(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field; UnknownFieldError (with the closest field) if there is none."""
  try:
    value = config[field]  # ConfigDict follows dotted paths.
  except (KeyError, AttributeError, IndexError, TypeError, ValueError):
    value = config  # Not found: reported below like a section.
  if isinstance(value, ml_collections.ConfigDict):
    match = difflib.get_close_matches(field, list(flatten(config)), n=1)
    raise UnknownFieldError(field, f' (did you mean {match[0]!r}?)' if match else '')
  return value


# absl's words for text that is not of a field's type -> what the field takes; and a hint for
# the fields whose type surprises (no fraction of an epoch).
_TYPE_WORDS = (('invalid literal for int()', 'a whole number'),
               ('could not convert string to float', 'a number'),
               ('Non-boolean argument to boolean flag', 'true or false'))
_TYPE_HINTS = {'train.num_epochs': 'for part of an epoch, set train.num_steps'}


def override_error(message: str) -> str:
  """absl's message for a `--config.<field>=<text>` of another type than the field's, in words:
  "flag --config.train.num_epochs=0.5: invalid literal for int() with base 10: '0.5'" ->
  "--config.train.num_epochs=0.5: train.num_epochs takes a whole number, not '0.5' (for part of
  an epoch, set train.num_steps)". Any other message is returned as it is."""
  match = re.fullmatch(r'flag --config\.([\w.]+)=(.*?): (.*)', message, re.S)
  words = match and next((w for text, w in _TYPE_WORDS if text in match.group(3)), None)
  if not words:
    return message
  field, text = match.group(1), match.group(2)
  hint = f' ({_TYPE_HINTS[field]})' if field in _TYPE_HINTS else ''
  return f'--config.{field}={text}: {field} takes {words}, not {text!r}{hint}'


def parse_override(config: ml_collections.ConfigDict, field: str, text: str) -> Any:
  """`text` parsed as `--config.<field>=<text>` would be, against the field's current type
  (int, float, bool, tuple, str, ...). UnknownFieldError or UsageError naming the field."""
  get_field(config, field)
  argv = ['vivano', f'--config.{field}={text}']
  values = flags.FlagValues()
  # The inline-config flag defines one typed flag per override it finds in argv, then parses it.
  config_flags.DEFINE_config_dict('config', copy.deepcopy(config), flag_values=values,
                                  lock_config=False, sys_argv=argv)
  try:
    values(argv)
  except (flags.Error, ValueError, TypeError) as e:
    raise errors.UsageError(override_error(str(e))) from None  # Names the flag and the value.
  return config_flags.get_override_values(values['config'])[field]


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
                    ) -> ml_collections.ConfigDict:
  """Sets dotted fields of `config` in place and returns it.

  A str value is command-line text, parsed by parse_override (for a str field that is the text
  itself); any other value is set as it is, and ConfigDict's type safety refuses a value of
  another type (an int for a float field is widened). UnknownFieldError for a field that is not
  there; UsageError naming the field and the value for a value it cannot take.
  """
  for field, value in overrides.items():
    current = get_field(config, field)
    try:
      # Text for a str field is the value itself (what its parser returns): no parse needed.
      parse = isinstance(value, str) and not isinstance(current, str)
      typed = parse_override(config, field, value) if parse else value
      config.update_from_flattened_dict({field: typed})
    except (errors.UsageError, TypeError, KeyError) as e:
      raise errors.UsageError(f'field {field!r} cannot take {value!r}: {e}') from None
  return config
