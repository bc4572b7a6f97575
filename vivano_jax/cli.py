"""The `vivano` command: one entry point, one flag style, one way to report a mistake.

  vivano <command> --flag=value ...      vivano --help      vivano <command> --help

Every command takes `--name=value` flags and `--verbosity` (0: progress lines, errors as one line,
library logs in the workdir's vivano.log; 1: library logs on the console too, errors with their
traceback, and debug logs). A mistake in the command line or a config field prints one line on
stderr and exits with 2; a missing, unreadable or invalid file or dataset, a full or read-only disk,
or a diverged run prints one line and exits with 1; Ctrl-C exits with 130. `python -m
vivano_jax.<module>` runs the same commands (`python -m vivano_jax.main` is `vivano train`).

The process environment is set up here, before a command's modules are imported: TensorFlow's C++
logs are quietened, TensorFlow is kept off the accelerators JAX uses, and library logs are routed
to the workdir's log file (console.py).
"""

import importlib
import os
import re
import sys
import traceback
import warnings
from typing import Optional, Sequence

from vivano_jax import console
from vivano_jax import errors

COMMANDS = {  # name -> (module, what it does)
    'train': ('vivano_jax.main', 'train a config and evaluate it, then export (as python -m '
              'vivano_jax.main)'),
    'export': ('vivano_jax.export', 'export a trained checkpoint: scores, maps, thresholds, report'),
    'evaluate': ('vivano_jax.evaluate', 'recompute the metrics of an export offline (no JAX)'),
    'export-model': ('vivano_jax.export_model', 'deploy a trained run: its scorer as ONNX, TF '
                     'SavedModel or serialized JAX'),
    'predict': ('vivano_jax.predict', 'score new images with a trained run or an exported model, '
                'and decide'),
    'report': ('vivano_jax.report', 'rebuild the HTML report of an exported split'),
    'benchmark': ('vivano_jax.benchmark', 'speed, FLOPs and memory of a config on random data'),
    'sweep': ('vivano_jax.sweep', 'plan, run and gather a sweep of runs (vivano sweep --help)'),
}
HELP_FLAGS = ('--help', '-h', '--helpfull')


def _usage() -> str:
  width = max(map(len, COMMANDS))
  lines = ['usage: vivano <command> [--flag=value ...]   (vivano <command> --help for its flags)',
           '', 'commands:']
  lines += [f'  {name:<{width}}  {what}' for name, (_, what) in COMMANDS.items()]
  return '\n'.join(lines)


def _pop_verbosity(argv: list[str]) -> tuple[list[str], int]:
  """argv without --verbosity=N (or --verbosity N), and N (default 0)."""
  rest, level, i = [], 0, 0
  while i < len(argv):
    a = argv[i]
    if a.startswith('--verbosity='):
      level = a.split('=', 1)[1]
    elif a == '--verbosity' and i + 1 < len(argv):
      i += 1
      level = argv[i]
    else:
      rest.append(a)
    i += 1
  try:
    return rest, int(level)
  except ValueError:
    raise errors.UsageError(f'--verbosity={level}: not an integer') from None


def _setup_environment(verbosity: int) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # absl's own flags keep their defaults.
  logging.set_verbosity(logging.DEBUG if verbosity >= 1 else logging.INFO)
  console.route_library_logs(verbosity)
  if verbosity < 1:  # PIL's "could be decompression bomb" warning names no file, and the image
    # is read; one over twice its limit is refused with one line naming it (image_files.py).
    warnings.filterwarnings('ignore', message=r'Image size \(\d+ pixels\) exceeds limit')


def _parse(name: str, module, argv: list[str]):
  """The command's flags parsed from argv (argv[0] is the program)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  module.define_flags(fv)
  if any(a in HELP_FLAGS for a in argv[1:]):
    doc = (module.__doc__ or '').strip()
    print(f'usage: vivano {name} [--flag=value ...]\n\n{doc}\n\nflags:\n'
          f'{fv.get_help(include_special_flags=False)}\n  --verbosity: 0 (default): progress and '
          'errors as one line, library logs in WORKDIR/vivano.log; 1: also library and debug logs '
          'on the console, errors with tracebacks')
    return None
  argv = _joined_config_flag(argv)
  _check_config_files(argv[1:])
  argv, overrides = _bare_overrides(name, module, argv)
  try:
    rest = fv(argv)
  except flags.Error as e:
    from vivano_jax import config_files  # pylint: disable=g-import-not-at-top
    raise errors.UsageError(config_files.override_error(str(e))) from e
  except (AttributeError, KeyError) as e:  # ml_collections: an unknown config field.
    raise errors.UsageError(_unknown_field(argv[1:], str(e))) from e
  if len(rest) > 1:
    raise errors.UsageError(f'unexpected arguments: {" ".join(rest[1:])}')
  _check_empty_flags(fv)
  _expand_home(fv)
  return fv, overrides


def _joined_config_flag(argv: list[str]) -> list[str]:
  """argv with '--config FILE' (absl's other spelling) as '--config=FILE', so the file is checked
  as that form is (a missing file was ml_collections' 'earlier failure to load' line, a failing
  get_config() a traceback)."""
  out, i = [], 0
  while i < len(argv):
    if argv[i] == '--config' and i + 1 < len(argv) and i > 0:
      out.append(f'--config={argv[i + 1]}')
      i += 2
    else:
      out.append(argv[i])
      i += 1
  return out


def _check_empty_flags(fv) -> None:
  """A path flag without a default given as '' (--input=, --workdir=, an unset shell variable)
  would read or write the current folder, or fail later on a nameless path: one usage error."""
  for name in fv:
    flag = fv[name]
    if flag.present and flag.default is None and isinstance(flag.value, str) and (
        not flag.value.strip()):
      raise errors.UsageError(f'--{name}={flag.value} is empty: {flag.help}')


def _expand_home(fv) -> None:
  """A path flag starting with '~' is made the home folder's path: the shell leaves the '~' of
  --workdir=~/runs/a as it is, and the run went to a folder named '~' in the current folder (as
  dataset.manual_dir and data_dir do, datasets.resolve_config)."""
  for name in fv:
    flag = fv[name]
    if flag.present and flag.default is None and isinstance(flag.value, str) and (
        flag.value.startswith('~')):
      flag.value = os.path.expanduser(flag.value)


def _bare_overrides(name: str, module, argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """(argv, {}) or, for --config.<field>=<value> flags given without --config, (argv without
  them, {field: value}): the command applies them to the run's own config (`vivano export`), or
  they are one error (a command that needs the config file they override)."""
  if any(a == '--config' or a.startswith('--config=') for a in argv[1:]):
    return argv, {}
  bare = [a for a in argv[1:] if a.startswith('--config.')]
  if not bare:
    return argv, {}
  if not getattr(module, 'OVERRIDES_RUN_CONFIG', False):
    raise errors.UsageError(f'{bare[0]}: a --config.<field> flag overrides a config file: give '
                            f'--config=<file> too (vivano {name})')
  overrides = {}
  for a in bare:
    field, equals, value = a[len('--config.'):].partition('=')
    if not equals:
      raise errors.UsageError(f'{a}: expected --config.<field>=<value>')
    overrides[field] = value
  return [a for a in argv if a not in bare], overrides


def _unknown_field(args: list[str], message: str) -> str:
  """'--config.a.bb: no such config field (did you mean "b"?)' from ml_collections' message."""
  key = re.search(r"'([^'\\]+)", message)
  key = key.group(1) if key else ''
  overrides = [a.split('=', 1)[0] for a in args if a.startswith('--config.')]
  field = next((f for f in overrides if key in f.split('.')), overrides[0] if overrides else '')
  hint = re.search(r'Did you mean "([^"]+)"', message)
  return f'{field}: no such config field' + (f' (did you mean {hint.group(1)!r}?)' if hint else '')


def _check_config_files(args: list[str]) -> None:
  """A --config file that is missing, does not load or whose get_config() fails is one error line
  (ml_collections would give a traceback, or report a missing file at first use)."""
  for a in args:
    if a.startswith('--config='):
      import inspect  # pylint: disable=g-import-not-at-top
      import ml_collections  # pylint: disable=g-import-not-at-top  (Only with a config.)
      from vivano_jax import config_files  # pylint: disable=g-import-not-at-top
      spec = a.split('=', 1)[1]
      path, _, arg = spec.partition(':')
      if not os.path.isfile(path):
        raise errors.DataError(f'--config={path}: ' + (
            'is a folder, not a config file' if os.path.isdir(path) else 'no such config file'))
      get_config = config_files.load_function(path, 'get_config')
      try:
        takes_arg = bool(inspect.signature(get_config).parameters)
      except (TypeError, ValueError):
        takes_arg = True
      if arg and not takes_arg:
        raise errors.UsageError(f'--config={spec}: get_config() of {path} takes no argument')
      try:
        config = get_config(arg) if arg else get_config()
      except (errors.UsageError, errors.DataError):
        raise
      except Exception as e:  # pylint: disable=broad-except
        raise errors.DataError(f'--config={spec}: get_config() failed: {type(e).__name__}: '
                               f'{e}') from e
      if not isinstance(config, ml_collections.ConfigDict):
        raise errors.DataError(f'--config={spec}: get_config() returned a value of type '
                               f'{type(config).__name__}, not an ml_collections.ConfigDict')
      from vivano_jax import config_checks  # pylint: disable=g-import-not-at-top
      try:
        config_checks.check_fields(config)  # A misspelt field would be ignored without a word.
      except errors.UsageError as e:
        raise errors.UsageError(f'--config={spec}: {e}') from None


def _run(name: str, argv: list[str]) -> int:
  module = importlib.import_module(COMMANDS[name][0])
  if 'vivano_jax.input_pipeline' in sys.modules:
    sys.modules['vivano_jax.input_pipeline'].keep_tensorflow_off_accelerators()
  if not hasattr(module, 'define_flags'):  # A command with its own subcommands (sweep).
    return int(module.main(argv[1:]) or 0)
  saved = sys.argv
  sys.argv = argv  # ml_collections' config flags read their --config.* overrides from sys.argv.
  try:
    parsed = _parse(name, module, argv)
  finally:
    sys.argv = saved
  if parsed is None:
    return 0
  fv, overrides = parsed
  return int((module.run(fv, overrides) if overrides else module.run(fv)) or 0)


def run_command(name: str, argv: Sequence[str]) -> int:
  """Runs command `name` with argv (argv[0] the program name); returns the exit code."""
  verbosity = 0
  try:
    argv, verbosity = _pop_verbosity(list(argv))
    _setup_environment(verbosity)
    with console.native_stderr_to_log():
      return _run(name, argv)
  except KeyboardInterrupt:
    print('interrupted', file=sys.stderr)
    return errors.EXIT_INTERRUPTED
  except (ValueError, OSError, FloatingPointError) as e:
    if verbosity >= 1:
      traceback.print_exc()
    code = errors.EXIT_USAGE if isinstance(e, errors.UsageError) else errors.EXIT_DATA
    print(f'error: {_one_line(e)}', file=sys.stderr)
    return code
  except Exception as e:  # pylint: disable=broad-except
    if not _out_of_memory(e):
      raise
    if verbosity >= 1:
      traceback.print_exc()
    print(f'error: out of memory ({_one_line(e)[:200]}): lower train.batch_size (or '
          'train.eval_batch_size when scoring), raise train.grad_accum_steps on an accelerator, '
          'or lower dataset.image_size', file=sys.stderr)
    return errors.EXIT_DATA


def _out_of_memory(e: BaseException) -> bool:
  """A host or device allocation failed (MemoryError, or XLA's RESOURCE_EXHAUSTED)."""
  return isinstance(e, MemoryError) or (
      type(e).__name__ in ('JaxRuntimeError', 'XlaRuntimeError')
      and 'RESOURCE_EXHAUSTED' in str(e))


def _one_line(e: BaseException) -> str:
  text = str(e) if not isinstance(e, OSError) or not e.filename else (
      f'{e.filename}: {e.strerror or e}')
  return ' '.join(text.split('\n')) or type(e).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The `vivano` console script."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in HELP_FLAGS:
    print(_usage())
    return 0 if len(argv) >= 2 else errors.EXIT_USAGE
  name = argv[1]
  if name not in COMMANDS:
    print(f'error: unknown command {name!r}; one of {", ".join(COMMANDS)}', file=sys.stderr)
    return errors.EXIT_USAGE
  return run_command(name, [f'vivano {name}'] + argv[2:])


def main_for(name: str) -> None:
  """`python -m vivano_jax.<module>`: the command `name` with this process's arguments."""
  sys.exit(run_command(name, sys.argv))


if __name__ == '__main__':
  sys.exit(main())
