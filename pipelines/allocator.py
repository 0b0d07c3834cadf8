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


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (both exist: this is glibc)
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to tune
        log.debug("no glibc malloc here; allocator left as it is")
        return None
    return libc


def keep_freed_memory() -> bool:
    """Tell glibc malloc never to use mmap and never to trim; False where libc is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def release_free_memory() -> bool:
    """Give the pages of free heap chunks back to the kernel (``malloc_trim(0)``), all at once.

    What ``keep_freed_memory`` gives up per batch, done now and then: a long-running process's
    heap fragments (Python objects of every batch between the tensors), its free chunks stay
    resident, and its memory climbs although nothing is live. The next batch faults back in only
    what it uses. True if memory was released."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
