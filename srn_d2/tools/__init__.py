"""Command-line entry points, each ``python -m srn_d2.tools.<name>`` (docs/GETTING_STARTED.md lists them).

Each tool parses its arguments and calls into the library, through
:func:`run_command` (``train_net``, ``evaluate_widerface`` and ``evaluate_fddb``
also assemble what they call: the trainer's steps, the ground truth, the files).
Nothing heavy is imported here, so that the numpy-only tools (evaluate_widerface)
start without torch or Detectron2.
"""

import sys

from ..errors import REPORTED_ERRORS


def run_command(command, argv) -> int:
    """Exit status of ``command(argv)``; bad input (:data:`srn_d2.errors.REPORTED_ERRORS`)
    is printed as one ``error:`` line on stderr, exit status 2.

    The message already names the file, line or key at fault, so a traceback
    would only bury it.
    """
    try:
        return command(argv)
    except REPORTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
