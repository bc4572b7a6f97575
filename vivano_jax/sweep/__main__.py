"""`python -m vivano_jax.sweep run|gather ...`: see the package docstring for the flags."""

import sys

from vivano_jax.sweep.command_line import main

if __name__ == '__main__':
  sys.exit(main())
