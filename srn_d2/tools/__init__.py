"""Command-line entry points, each ``python -m srn_d2.tools.<name>`` (see the README's table).

Nothing is imported here, so that the numpy-only tools (evaluate_widerface)
start without torch or Detectron2.
"""
