"""One process at a time on a workdir: WORKDIR/.lock names the host and pid of the command that
writes it (train, export, report) or reads it whole (export-model), so none reads a run half
updated by another, and the workdir it was taken in (a lock copied with a run is not the copy's).
Standard library only (no JAX): `vivano report` needs none.
"""

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from typing import Iterator, Optional

from vivano_jax import console
from vivano_jax import errors

LOCK_FILE = '.lock'


def remove_stale_temporaries(workdir: str) -> list[str]:
  """Deletes the hidden '.<name>.tmp-*' / '.<name>.old-*' folders a killed export leaves in the
  workdir (only while holding its lock: no other export can be writing them); returns them."""
  removed = []
  if not os.path.isdir(workdir):
    return removed
  for name in sorted(os.listdir(workdir)):
    if name.startswith('.') and ('.tmp-' in name or '.old-' in name):
      shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
      removed.append(name)
  return removed


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Another user's process.
  return True


def _take(path: str) -> bool:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w') as f:
    json.dump({'host': socket.gethostname(), 'pid': os.getpid(),
               'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
               'workdir': os.path.realpath(os.path.dirname(path))}, f)
  return True


def _holder(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return None  # Being written, or damaged.
  # A lock of another shape (edited, or written by something else) is no holder this can judge.
  valid = isinstance(holder, dict) and isinstance(holder.get('pid'), int) and not isinstance(
      holder.get('pid'), bool)
  return holder if valid else None


def _copied(holder: dict, path: str) -> bool:
  """Whether the lock names another workdir than the one it is in: it was copied with a run that a
  process was writing (cp -r, rsync), and that process holds the original, not this copy."""
  recorded = holder.get('workdir')
  return isinstance(recorded, str) and recorded != os.path.realpath(os.path.dirname(path))


def _stale_holder(workdir: str, path: str) -> dict:
  """The holder of the existing lock `path` when its process no longer runs on this host, or when
  the lock was copied from another workdir (`_copied`); a DataError naming the holder and the file
  to delete else."""
  holder = _holder(path)
  if holder is not None and (_copied(holder, path) or (
      holder.get('host') == socket.gethostname() and not _alive(holder['pid']))):
    return holder
  who = (f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})"
         if holder else 'another process')
  raise errors.DataError(f'{workdir} is in use by {who}: wait for it to end or use another '
                         f'--workdir; if that process is gone, delete {path}')


@contextlib.contextmanager
def lock(workdir: str, reads_only: bool = False) -> Iterator[None]:
  """Holds WORKDIR/.lock (this host and pid) while a command writes the workdir; a second process
  is refused with one line. A lock left by a process that no longer runs on this host is stale and
  taken over with a warning. With several processes, process 0 holds it for all. Meanwhile, the
  command's library logs go to WORKDIR/vivano.log (console.py).

  reads_only: the command only reads the run (export-model). A run this process cannot write (a
  read-only copy) is read without taking the lock, once no running process holds it."""
  if console.jax_process_index() != 0:
    yield
    return
  errors.check_folder_flag('--workdir', workdir)
  path = os.path.join(workdir, LOCK_FILE)
  if reads_only and os.path.isdir(workdir) and not os.access(workdir, os.W_OK):
    if os.path.lexists(path):
      _stale_holder(workdir, path)
    yield
    return
  created = not os.path.isdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  if not _take(path):
    holder = _stale_holder(workdir, path)
    why = (f"copied from {holder['workdir']}, which pid {holder.get('pid')} was writing"
           if _copied(holder, path) else
           f"of pid {holder.get('pid')}, which no longer runs")
    print(f'warning: {workdir}: removing the stale lock {why}', file=sys.stderr)
    os.remove(path)
    if not _take(path):
      raise errors.DataError(f'{workdir} is in use by another process (it took {path} just now)')
  for name in remove_stale_temporaries(workdir):
    print(f'warning: {workdir}: removed {name}, left by an interrupted export', file=sys.stderr)
  try:
    with console.logs_in(workdir):  # Library logs go to WORKDIR/vivano.log meanwhile.
      yield
  finally:
    if os.path.exists(path) and (_holder(path) or {}).get('pid') == os.getpid():
      os.remove(path)
    if created and set(os.listdir(workdir)) <= {console.LOG_FILE}:  # Failed before writing.
      shutil.rmtree(workdir)
