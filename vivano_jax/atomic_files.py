"""Atomic writes of files and folders: a reader sees the old one or the complete new one, never a
partial one.

Only the standard library (and errors.py): the offline evaluator and the sweep runner import it without JAX.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Iterator

from vivano_jax import errors


def _json_default(o: Any) -> Any:
  return o.item() if hasattr(o, 'item') else str(o)  # numpy scalars -> Python numbers


def write_text(path: str | os.PathLike, text: str, newline: str | None = None) -> None:
  """Writes `text` to `path` through a temporary file renamed over it; a failed write (a full
  disk) leaves `path` as it was (or absent) and no temporary file."""
  path = os.fspath(path)
  tmp = f'{path}.tmp{os.getpid()}'  # Unique per process: array jobs may write the same file.
  try:
    with open(tmp, 'w', newline=newline) as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON to `path`, atomically (`write_text`)."""
  write_text(path, json.dumps(obj, indent=2, default=_json_default))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields an empty hidden sibling of `path` to fill; when the block succeeds it replaces `path`.

  On an error the sibling is deleted and `path` is left as it was. A process killed mid-way leaves
  only a hidden '.<name>.tmp-*' folder, never a complete-looking `path`.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.tmp-', dir=path.parent))
  try:
    yield tmp
    tmp.chmod(0o755)  # mkdtemp makes it private.
    old = None
    if path.exists():
      # A directory cannot be renamed onto a non-empty one: move the old one aside first.
      old = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.old-', dir=path.parent))
      os.rename(path, old / path.name)
    try:
      os.rename(tmp, path)
    except BaseException:
      if old is not None:
        os.rename(old / path.name, path)
      raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike) -> Iterator[None]:
  """Holds an exclusive `flock` on `lock_path` (created if missing) for the block: processes
  that would write the same thing take turns; the later one finds it written."""
  with open(lock_path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
  """The JSON object in `path`; a DataError naming the file when it is unreadable, not JSON or not
  an object (what json.load raises names no file)."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.DataError(f'{path}: unreadable or corrupt ({e})') from e
  if not isinstance(value, dict):
    raise errors.DataError(f'{path}: corrupt (not a JSON object)')
  return value
