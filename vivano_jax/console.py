"""What a run shows a person: one line per stage, a progress bar while training, and nothing else.

Library logs (absl, JAX, Orbax, tfds, TensorFlow) go to WORKDIR/vivano.log once a command knows its
workdir (held in memory until then); with `--verbosity=1` they go to the console as well. Errors
are the entry point's one line on stderr (cli.py). Only process 0 of a multi-host run prints.
"""

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Iterator, Optional, TextIO

LOG_FILE = 'vivano.log'
_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'


class _Router:
  """Where library logs go: a memory buffer until a command opens its workdir's log file."""

  def __init__(self):
    self.buffer = io.StringIO()
    self.file_handler = logging.StreamHandler(self.buffer)
    self.file_handler.setFormatter(logging.Formatter(_FORMAT))
    self.native: Optional[Any] = None  # The file fd 2 is redirected to, and how far it was read.
    self.native_read = 0
    self.verbose = False

  def drain_native(self) -> None:
    """Copies what C++ libraries wrote to fd 2 since the last call into the current log."""
    if self.native is None:
      return
    self.native.flush()
    self.native.seek(self.native_read)
    data = self.native.read()
    self.native_read += len(data)
    self.native.seek(0, io.SEEK_END)
    if data:
      self.file_handler.stream.write(data.decode('utf-8', 'replace'))


class _ConsoleHandler(logging.Handler):
  """Writes to whatever sys.stderr is at the time (tests and the fd redirection replace it)."""

  def emit(self, record):
    try:
      sys.stderr.write(self.format(record) + '\n')
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def _not_an_abandoned_future(record: logging.LogRecord) -> bool:
  """asyncio's 'exception was never retrieved' for a future or task collected with its error
  unread (Orbax's other pending reads of a checkpoint that did not restore, after the error that
  ended them was reported, whenever its event loop next runs) is kept off the console at verbosity
  0, like an unraisable exception; it stays in the log file."""
  return not (record.name == 'asyncio' and 'exception was never retrieved' in record.getMessage())


_router: Optional[_Router] = None


def route_library_logs(verbosity: int) -> None:
  """Called by the entry point before anything logs: library logs (Python's logging, which absl,
  JAX, Orbax, tfds and TensorFlow use) are kept in memory until `logs_in` gives them a file; on the
  console only errors, or everything at verbosity >= 1."""
  global _router
  root = logging.getLogger()
  if _router is not None:
    root.removeHandler(_router.file_handler)
  _router = _Router()
  _router.verbose = verbosity >= 1
  console_handler = _ConsoleHandler(logging.DEBUG if _router.verbose else logging.ERROR)
  console_handler.setFormatter(logging.Formatter(_FORMAT))
  if not _router.verbose:
    console_handler.addFilter(_not_an_abandoned_future)
  for h in list(root.handlers):
    if isinstance(h, _ConsoleHandler):
      root.removeHandler(h)
  root.addHandler(_router.file_handler)
  root.addHandler(console_handler)
  root.setLevel(logging.DEBUG if _router.verbose else logging.INFO)
  sys.unraisablehook = sys.__unraisablehook__ if _router.verbose else _log_unraisable


def _log_unraisable(unraisable) -> None:
  """An exception Python could not raise (one in a finaliser or a collected coroutine: Orbax's
  pending reads of a damaged checkpoint, after the error that ended them was reported) goes to
  the log file, not the console, at verbosity 0."""
  text = ''.join(traceback.format_exception(unraisable.exc_type, unraisable.exc_value,
                                            unraisable.exc_traceback))
  where = f' in {unraisable.object!r}' if unraisable.object is not None else ''
  logging.getLogger('vivano_jax.unraisable').warning(
      '%s%s:\n%s', unraisable.err_msg or 'Exception ignored', where, text.rstrip())


def quiet() -> bool:
  """Whether library output is kept off the console (a command at verbosity 0): tfds' own progress
  bars are then turned off too."""
  return _router is not None and not _router.verbose


class _LogWriter(io.TextIOBase):
  """A text stream whose lines become INFO records of `logger`."""

  def __init__(self, logger: str):
    super().__init__()
    self._logger, self._pending = logging.getLogger(logger), ''

  def write(self, text: str) -> int:
    *lines, self._pending = (self._pending + text).split('\n')
    for line in lines:
      if line.strip():
        self._logger.info('%s', line)
    return len(text)


@contextlib.contextmanager
def prints_to_log(logger: str) -> Iterator[None]:
  """At verbosity 0, what a library prints to stdout inside the block goes to the log instead."""
  if not quiet():
    yield
    return
  with contextlib.redirect_stdout(_LogWriter(logger)):
    yield


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
  """At verbosity 0, what C++ libraries (TensorFlow, XLA) write straight to file descriptor 2 goes
  to the log as well; Python's own stderr (errors, warnings) stays on the console."""
  if _router is None or _router.verbose:
    yield
    return
  try:
    stderr_is_fd2 = sys.stderr.fileno() == 2
  except (AttributeError, OSError, ValueError):
    stderr_is_fd2 = False
  sys.stderr.flush()
  saved_fd, saved_stderr = os.dup(2), sys.stderr
  _router.native, _router.native_read = tempfile.TemporaryFile(), 0
  os.dup2(_router.native.fileno(), 2)
  if stderr_is_fd2:
    sys.stderr = os.fdopen(os.dup(saved_fd), 'w', buffering=1, encoding='utf-8')
  try:
    yield
  finally:
    if stderr_is_fd2:
      sys.stderr.flush()
      sys.stderr.close()
      sys.stderr = saved_stderr
    os.dup2(saved_fd, 2)
    os.close(saved_fd)
    _router.drain_native()
    _router.native.close()
    _router.native = None


@contextlib.contextmanager
def logs_in(workdir: str) -> Iterator[None]:
  """Library logs go to WORKDIR/vivano.log (appended) inside the block, with what was logged before
  it; after it, to memory again. Nothing changes for a caller that did not route them (a library
  user calling the modules directly keeps its own logging)."""
  if _router is None or jax_process_index() != 0:
    yield
    return
  with open(os.path.join(workdir, LOG_FILE), 'a', encoding='utf-8') as stream:
    stream.write(_router.buffer.getvalue())
    _router.buffer = io.StringIO()
    _router.file_handler.setStream(stream)
    try:
      _router.drain_native()
      yield
    finally:
      _router.drain_native()
      _router.file_handler.setStream(_router.buffer)


def jax_process_index() -> int:
  """0 where JAX is not loaded (the serving path never imports it)."""
  return sys.modules['jax'].process_index() if 'jax' in sys.modules else 0


def _is_main_process() -> bool:
  return jax_process_index() == 0


def say(text: str, stream: Optional[TextIO] = None) -> None:
  """One line for the person running the command (process 0 only)."""
  if _is_main_process():
    print(text, file=stream or sys.stdout, flush=True)


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f'{minutes}m{seconds:02d}s'
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m'


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
  """Prints '<name> ...' and, when the block ends, how long it took."""
  start = time.perf_counter()
  say(f'{name} ...')
  yield
  say(f'{name}: done in {_duration(time.perf_counter() - start)}')


class Progress:
  """A progress bar: step / total, loss, images/s and the time left.

  On a terminal one line is redrawn in place (at most 4 times a second); elsewhere (a log of a
  cluster job) a line is printed at every tenth of the run, so logs stay short.
  """

  def __init__(self, total: int, start: int, batch_size: int, stream: Optional[TextIO] = None,
               width: int = 24):
    self.total, self.start, self.batch_size, self.width = total, start, batch_size, width
    self.stream = stream or sys.stdout
    self.tty = bool(getattr(self.stream, 'isatty', lambda: False)())
    self.enabled = _is_main_process() and total > start
    self._t0: Optional[float] = None  # After the first step (compilation excluded).
    self._first = start
    self._last_draw = 0.0
    self._next_line = start

  def rate(self, step: int) -> Optional[float]:
    """Images/s since the first step (which includes compilation) ended."""
    if self._t0 is None or step <= self._first:
      return None
    return (step - self._first) * self.batch_size / max(time.perf_counter() - self._t0, 1e-9)

  def line(self, step: int, loss: Optional[float]) -> str:
    done = (step - self.start) / max(self.total - self.start, 1)
    filled = int(round(done * self.width))
    bar = '#' * filled + '.' * (self.width - filled)
    parts = [f'train [{bar}] {step}/{self.total}']
    if loss is not None:
      parts.append(f'loss {loss:.4g}')
    rate = self.rate(step)
    if rate is not None:
      parts.append(f'{rate:.1f} img/s')
      parts.append(f'ETA {_duration((self.total - step) * self.batch_size / rate)}')
    return '  '.join(parts)

  def update(self, step: int, loss: Optional[float] = None) -> None:
    if not self.enabled:
      return
    now = time.perf_counter()
    if self._t0 is None:
      self._t0, self._first = now, step
    if self.tty:
      if now - self._last_draw >= 0.25 or step == self.total:
        self.stream.write('\r' + self.line(step, loss) + '\x1b[K')
        self.stream.flush()
        self._last_draw = now
    elif step >= self._next_line or step == self.total:
      self.stream.write(self.line(step, loss) + '\n')
      self.stream.flush()
      tenth = max((self.total - self.start) // 10, 1)
      self._next_line = self.start + ((step - self.start) // tenth + 1) * tenth

  def close(self) -> None:
    if self.enabled and self.tty:
      self.stream.write('\n')
      self.stream.flush()
