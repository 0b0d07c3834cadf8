"""Keep freed memory in the process: large tensors are reused instead of faulted in afresh.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh `mmap` and
returns it with `munmap` when freed. A large batch's activations are above that threshold, so
each forward pass faulted its scratch memory in page by page, zeroed by the kernel, and paid for
it in system time. With mmap off and no trimming the pages stay. The cost: the process keeps its peak
heap instead of handing memory back, which for a scorer is what it will need again next batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("voxpop.allocator")

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Tell glibc malloc never to use mmap and never to trim; False where libc is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to tune
        log.debug("no glibc mallopt here; allocator left as it is")
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
