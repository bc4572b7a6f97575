"""The package stays readable: no module over 400 lines, no function over 60 (ARCHITECTURE.md)."""

import ast

from tests.conftest import HEAVIEST_FILES_FIRST
from tests.conftest import REPO

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules():
  return sorted((REPO / 'vivano_jax').rglob('*.py'))


def test_modules_and_functions_are_short():
  too_long = []
  for path in _modules():
    text = path.read_text()
    name = path.relative_to(REPO)
    if len(text.splitlines()) > MAX_MODULE_LINES:
      too_long.append(f'{name}: {len(text.splitlines())} lines')
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        if n > MAX_FUNCTION_LINES:
          too_long.append(f'{name}:{node.lineno} {node.name}: {n} lines')
  assert not too_long, '\n'.join(too_long)


def test_no_environment_changes_at_import():
  # The entry point (cli.py) sets up the process; importing a module must not.
  for path in _modules():
    if path.name == 'cli.py':
      continue
    tree = ast.parse(path.read_text())
    for node in tree.body:  # Statements run at import, not function or class bodies.
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        continue
      text = ast.unparse(node)
      assert 'os.environ' not in text and 'set_visible_devices' not in text, (path, text)


def test_the_suites_file_order_names_test_files():
  # conftest.py's scheduling order names files that exist (a renamed file would drop to the end).
  assert len(set(HEAVIEST_FILES_FIRST)) == len(HEAVIEST_FILES_FIRST)
  missing = [name for name in HEAVIEST_FILES_FIRST if not (REPO / 'tests' / name).is_file()]
  assert not missing, missing
