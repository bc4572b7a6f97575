"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Only the standard library: the offline evaluator and the sweep runner import it without JAX.
"""

import json
import os
from typing import Any


def _json_default(o: Any) -> Any:
  return o.item() if hasattr(o, 'item') else str(o)  # numpy scalars -> Python numbers


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON to `path` through a temporary file renamed over it."""
  path = os.fspath(path)
  tmp = f'{path}.tmp{os.getpid()}'  # Unique per process: array jobs may write the same file.
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, default=_json_default)
  os.replace(tmp, path)
