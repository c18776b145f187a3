"""Shared command-line plumbing for recipes: absl flags (with ``--flagfile``), one-line errors with exit status 2."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402


class UsageError(Exception):
    """Bad input (flag, spec, file, data): reported as one line on stderr, exit status 2."""


def _parse(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"{os.path.basename(argv[0])}: {e}", file=sys.stderr)
        sys.exit(2)


def run(main) -> None:
    """``app.run`` with a flags parser and error handling that keep bad input to one line and exit status 2."""
    from models.spec import SpecError
    from models.weights import WeightsError
    from zoo import ZooError

    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)  # TensorFlow's SavedModel/export INFO lines drown the results
        try:
            return main(argv)
        except (UsageError, SpecError, ZooError, WeightsError) as e:
            print(f"{os.path.basename(sys.argv[0])}: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(wrapped, flags_parser=_parse)
