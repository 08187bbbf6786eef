"""Helpers for building large numbers of small Python objects."""

import contextlib
import gc


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector.

    Building ~10^5 annotation dicts triggers dozens of full collections that
    find nothing (the dicts hold no cycles) and cost more than the building itself.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
