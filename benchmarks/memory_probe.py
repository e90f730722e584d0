"""Working memory of a call, counted at the dispatcher: the peak bytes of tensors created during the call
and alive at the same time.

CPU PyTorch keeps no allocator statistics and process RSS is noisy (allocator caching, other processes), so
the memory benchmarks and tests count tensor storages instead: every storage an operator returns (views and
in-place results excluded) is added when it first appears and removed when it is freed. Buffers a kernel uses internally and frees before returning
(e.g. SDPA's per-block scores) are not seen; on CUDA ``torch.cuda.max_memory_allocated`` measures everything.

Storages are told apart by identity, not by address: fake tensors (``FakeTensorMode``, which measures true sizes
without the memory) all report address 0. PyTorch keeps one Python object per live storage, so its identity is
stable until the storage is freed (``tests/test_parallel_memory.py`` checks fake and real counts agree).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorBytes(TorchDispatchMode):
    """``with LiveTensorBytes() as probe: f()`` -> ``probe.peak`` bytes (storages made by ``f`` only)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(ret.alias_info is not None for ret in func._schema.returns):
            return out  # a view or an in-place result: memory that already existed
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                self._track(value.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key = id(storage)
        if key in self._sizes or storage.nbytes() == 0:
            return
        self._sizes[key] = storage.nbytes()
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._freed, key)

    def _freed(self, key) -> None:
        self.live -= self._sizes.pop(key, 0)
