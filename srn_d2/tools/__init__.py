"""Command-line entry points, each ``python -m srn_d2.tools.<name>`` (see the README's table).

Nothing is imported here, so that the numpy-only tools (evaluate_widerface)
start without torch or Detectron2.
"""
import sys


def report_bad_input(command, argv) -> int:
    """Exit status of ``command(argv)``; bad input (ValueError, OSError) is printed, status 2.

    The message already names the file, line or option at fault, so a traceback
    would only bury it.
    """
    try:
        return command(argv)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
