"""Keeping freed memory for reuse, so that frame after frame runs without page faults.

PyTorch's CPU tensors come from the C library's `malloc`. glibc's serves a large block (above
a threshold that adapts as the program runs) by mapping fresh pages from the kernel, and hands
memory freed at the top of its heap back to the kernel. A delta model holds the tensors of its
key frame across the frames after it, so the large temporaries of the frames after a key frame
often land where no freed block fits, on fresh pages: the first touch of each page is a page
fault, and the kernel zeroes the page, time that is not in the multiply-adds. How many
depends on the model and on which thread allocates; tests/test_allocator.py shows the pattern
on its own: two 24 MiB blocks allocated and freed per cycle are taken afresh from the kernel
cycle after cycle with glibc's thresholds, and reused once a runner has set its own.

`retain_freed_memory()` fixes both thresholds: blocks up to 32 MiB (glibc's largest mapping
threshold on 64-bit systems) come from the heap, and freed memory stays in it for the next
frame to reuse, as jemalloc or tcmalloc (which PyTorch's CPU performance guide suggests
preloading) would keep it. The price: the process keeps its peak heap until it exits, and for
a process that runs a model on a stream that peak is what it needs anyway. Elsewhere than
glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 1 << 30  # hand memory back only when a whole GiB is free at the heap's top


@functools.cache
def retain_freed_memory() -> bool:
    """Keep freed memory in the process for reuse (once per process; glibc only). Returns
    whether the allocator took the setting."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mapped = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    trimmed = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(mapped and trimmed)
