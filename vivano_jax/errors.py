"""The two kinds of mistakes a user can make, and the exit codes the `vivano` command gives them.

Raise `UsageError` for a bad flag, config field or argument (exit code 2) and `DataError` for a
missing, unreadable or invalid file or dataset (exit code 1). Both are `ValueError`s, so library
callers can catch them as such. The entry point (cli.py) prints either as one line on stderr; any
other `ValueError` or `OSError` is reported the same way with exit code 1. Ctrl-C exits with 130.
"""

import os

EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
  """A bad flag, config field or argument: the command line must change."""


class DataError(ValueError):
  """A missing, unreadable or invalid input file or dataset: the data must change."""


def check_folder_flag(flag: str, path: str) -> None:
  """UsageError when the folder a flag names (--workdir, --output), or a folder above it, exists as
  a file (the system's 'Not a directory' or 'File exists' names neither the flag nor the file)."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise UsageError(f'{flag}={path}: is a file, not a folder')
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.lexists(parent) and parent != os.path.dirname(parent):
    parent = os.path.dirname(parent)
  if os.path.lexists(parent) and not os.path.isdir(parent):
    raise UsageError(f'{flag}={path}: {parent} is a file, not a folder')
