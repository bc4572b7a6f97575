"""What a run prints: the progress bar's figures against a hand-computed case, its line cadence,
and stage lines with their durations."""

import asyncio
import gc
import io
import logging
import sys

from vivano_jax import console


class _Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_progress_figures_and_cadence_off_a_terminal(monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(console.time, 'perf_counter', clock)
  out = io.StringIO()  # Not a terminal: a line at every tenth of the run.
  bar = console.Progress(total=100, start=0, batch_size=16, stream=out, width=10)
  bar.update(1, loss=2.5)  # The first step (compilation) starts the clock.
  clock.now += 9.0
  bar.update(10, loss=1.25)
  clock.now += 1.0
  bar.update(11, loss=1.0)  # Not a tenth: no line.
  clock.now += 90.0
  bar.update(100, loss=0.5)
  bar.close()
  lines = out.getvalue().splitlines()
  assert lines[0] == 'train [..........] 1/100  loss 2.5'
  # 9 steps of 16 images in 9 s: 16 img/s; 90 steps left take 90 s.
  assert lines[1] == 'train [#.........] 10/100  loss 1.25  16.0 img/s  ETA 1m30s'
  # 99 steps since step 1 in 100 s.
  assert lines[-1] == f'train [##########] 100/100  loss 0.5  {99 * 16 / 100:.1f} img/s  ETA 0s'
  assert len(lines) == 3


def test_progress_redraws_one_line_on_a_terminal(monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(console.time, 'perf_counter', clock)

  class Terminal(io.StringIO):
    def isatty(self):
      return True

  out = Terminal()
  bar = console.Progress(total=4, start=0, batch_size=1, stream=out, width=4)
  for step in range(1, 5):
    clock.now += 1.0
    bar.update(step)
  bar.close()
  text = out.getvalue()
  assert text.count('\n') == 1 and text.endswith('\n')
  assert text.count('\r') == 4 and 'train [####] 4/4' in text


def test_a_resumed_run_counts_from_its_start():
  out = io.StringIO()
  bar = console.Progress(total=10, start=10, batch_size=1, stream=out)
  bar.update(10)
  assert not bar.enabled and out.getvalue() == ''


def test_stage_prints_its_duration(monkeypatch, capsys):
  clock = _Clock()
  monkeypatch.setattr(console.time, 'perf_counter', clock)
  with console.stage('train'):
    clock.now += 125.0
  assert capsys.readouterr().out.splitlines() == ['train ...', 'train: done in 2m05s']


def test_unraisable_exceptions_go_to_the_log_file_at_verbosity_0(tmp_path, capfd):
  """What Python cannot raise (here a finaliser's error, like Orbax's collected reads of a damaged
  checkpoint) stays off the console at verbosity 0 and is kept in WORKDIR/vivano.log; verbosity 1
  gives Python's own report on the console."""

  class Finalised:
    def __del__(self):
      raise RuntimeError('Event loop is closed')

  root = logging.getLogger()
  router = console._router  # pylint: disable=protected-access
  old = sys.unraisablehook, list(root.handlers), root.level, router
  try:
    console.route_library_logs(0)
    with console.logs_in(str(tmp_path)):
      Finalised()  # Collected at once: its __del__ raises into sys.unraisablehook.
    assert capfd.readouterr().err == ''
    log = (tmp_path / console.LOG_FILE).read_text()
    assert 'Finalised.__del__' in log and 'RuntimeError: Event loop is closed' in log
    console.route_library_logs(1)
    Finalised()
    err = capfd.readouterr().err
    assert 'Exception ignored' in err and 'RuntimeError: Event loop is closed' in err
  finally:
    sys.unraisablehook, handlers, level, console._router = old  # pylint: disable=protected-access
    for h in list(root.handlers):
      root.removeHandler(h)
    for h in handlers:
      root.addHandler(h)
    root.setLevel(level)


def test_abandoned_futures_go_to_the_log_file_at_verbosity_0(tmp_path, capfd):
  """asyncio logs a future collected with its exception unread (Orbax's other reads of a checkpoint
  that did not restore) as an ERROR whenever it is collected: that was printed into the next
  command's one-line error. It stays in WORKDIR/vivano.log at verbosity 0; other asyncio errors
  and verbosity 1 still reach the console."""

  def abandon():
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    future.set_exception(ValueError('Requested shape: (64,) is not compatible'))
    del future
    gc.collect()
    loop.close()

  root = logging.getLogger()
  old = list(root.handlers), root.level, console._router  # pylint: disable=protected-access
  try:
    console.route_library_logs(0)
    with console.logs_in(str(tmp_path)):
      abandon()
      assert capfd.readouterr().err == ''
      logging.getLogger('asyncio').error('Unclosed event loop')
      assert 'ERROR asyncio: Unclosed event loop' in capfd.readouterr().err
    log = (tmp_path / console.LOG_FILE).read_text()
    assert 'Future exception was never retrieved' in log and '(64,) is not compatible' in log
    console.route_library_logs(1)
    abandon()
    assert 'Future exception was never retrieved' in capfd.readouterr().err
  finally:
    handlers, level, console._router = old  # pylint: disable=protected-access
    for h in list(root.handlers):
      root.removeHandler(h)
    for h in handlers:
      root.addHandler(h)
    root.setLevel(level)
