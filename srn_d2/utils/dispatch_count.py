"""Counting the aten operators a piece of code runs, and those that make a GPU wait on the host.

On a GPU the host queues kernels ahead of the device; an operator whose result
the host must read before it can go on (a shape that depends on the data, a
Python number) drains that queue. :class:`DispatchCount` sees every operator at
the dispatcher, on any device, so the count comes out the same on a CPU as on a
GPU: what ``torch.cuda.set_sync_debug_mode`` would report there is counted here
by the operator's kind.
"""

from collections import Counter
from typing import Dict

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["DispatchCount", "SYNC_KINDS"]

_HOST_READS = {"_local_scalar_dense", "item"}
# Their output's shape is a count of the input's values.
_DATA_SHAPED = {
    "nonzero",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
}

# The kinds of syncs, as :class:`DispatchCount` reports them.
SYNC_KINDS = ("host_read", "data_shaped", "boolean_index", "repeat_interleave", "host_copy")


def _sync_kind(name: str, overload: str, args, kwargs) -> str:
    """The reason ``name`` with these arguments waits on the device, or ""."""
    if name in _HOST_READS:
        return "host_read"
    if name == "lift_fresh":
        # torch.tensor(python data): on a GPU, a copy from pageable host memory the stream waits for.
        return "host_copy"
    if name in _DATA_SHAPED:
        return "data_shaped"
    if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
            return "boolean_index"
    if name == "repeat_interleave" and overload == "Tensor" and kwargs.get("output_size") is None:
        # Repeats given as a tensor: the output's length is their sum, read on the host.
        return "repeat_interleave"
    return ""


class _ReadsPastTheDispatcher(TorchFunctionMode):
    """``tolist()`` and ``numpy()`` read a tensor's values without an operator the dispatcher sees
    (on a GPU they copy to the host first, and wait for it)."""

    def __init__(self, syncs: Counter):
        super().__init__()
        self.syncs = syncs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("tolist", "numpy"):
            self.syncs["host_read"] += 1
        return func(*args, **(kwargs or {}))


class DispatchCount(TorchDispatchMode):
    """Counts operators while active: ``with DispatchCount() as count: ...``.

    Attributes:
        ops: operators run, by name (``aten.add``).
        syncs: operators that wait on the device, by kind (:data:`SYNC_KINDS`): a Python
            number or list read from a tensor (``item``, ``int``, ``tolist``, ``numpy``), an
            output shaped by the data (``nonzero``), a boolean
            mask index or assignment, ``repeat_interleave`` without ``output_size``, a tensor
            made from Python data (on a GPU, a copy from the host).
    """

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()
        self.syncs: Counter = Counter()

    def __enter__(self):
        self._reads = _ReadsPastTheDispatcher(self.syncs)
        self._reads.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        self._reads.__exit__(*exc)
        return result

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        kind = _sync_kind(name, func._overloadname, args, kwargs)
        if kind:
            self.syncs[kind] += 1
        return func(*args, **kwargs)

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def total_syncs(self) -> int:
        return sum(self.syncs.values())

    def summary(self) -> Dict[str, int]:
        return {
            "ops": self.total_ops,
            "syncs": self.total_syncs,
            **{k: self.syncs[k] for k in SYNC_KINDS},
        }
