"""pipelines.allocator: freed batch memory is reused, not faulted in again (glibc only)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, resource, sys
from pipelines.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
n = 64 * 2**20  # a batch-256 activation's size, above glibc's largest mmap threshold
def batch():  # what a forward pass does with its scratch memory: allocate, write, free
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)
def test_keep_freed_memory_stops_refaulting_batch_sized_tensors() -> None:
    default, kept = _faults("default"), _faults("keep")
    assert default >= 5 * 16_384, default  # 64 MB of 4 KB pages faulted in afresh, five times
    assert kept < 1_000, (kept, default)  # the same pages, reused
