"""Freed memory stays in the process for reuse once a runner exists: large blocks that glibc's
own thresholds serve from memory fresh from the kernel (a page fault on each page's first
touch) reuse freed memory instead. Measured in fresh processes that do the same, one with the C
library's default thresholds as the reference, by glibc's own account of the memory it holds
(`mallinfo2`): deterministic, and independent of whether the kernel counts page faults."""

import json
import subprocess
import sys

import pytest

from nas.delta.allocator import retain_freed_memory
from tests.conftest import REPO

# A runner is made (its setting taken, or in the reference not), then two 24 MiB blocks are
# allocated and freed per cycle, as PyTorch's CPU allocator does for a tensor (posix_memalign,
# 64-byte aligned; called directly, so that no other allocation lands between them). Per cycle,
# the script takes how far the memory glibc holds (its heap plus its mapped blocks) grew between
# the end of the cycle before and the point where both blocks are allocated: the memory the
# cycle took from the kernel rather than reused. By default glibc hands the freed top of its
# heap back (once it exceeds twice its adaptive mapping threshold), so every cycle takes both
# blocks afresh.
SCRIPT = r"""
import ctypes, ctypes.util, json, sys
import nas.delta.runner
from nas.graph.layers import layer_graph
from nas.delta.runner import DeltaRunner
from nas.delta.model import DeltaModel
from search_spaces import build_candidate
from tests.conftest import build_tiny

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
libc.posix_memalign.argtypes = (ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t)
libc.free.argtypes = (ctypes.c_void_p,)

def held():
    info = libc.mallinfo2()
    return info.arena + info.hblkhd

def allocate(size):
    block = ctypes.c_void_p()
    assert libc.posix_memalign(ctypes.byref(block), 64, size) == 0
    return block

if sys.argv[1] == "default":
    nas.delta.runner.retain_freed_memory = lambda: False
net = build_tiny()
full = lambda layer, conv: build_candidate("full", layer, weight=conv.weight.detach())
DeltaRunner(DeltaModel.build(net, layer_graph(net, (32, 32)), full), interval=2)
taken = []
after = held()
for cycle in range(6):
    a, b = allocate(24 << 20), allocate(24 << 20)
    taken.append(max(0, held() - after))
    libc.free(a)
    libc.free(b)
    after = held()
print(json.dumps(sum(taken[-3:])))
"""

MIB = 1 << 20


def _taken(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_runner_keeps_freed_memory_for_reuse():
    if not retain_freed_memory():
        pytest.skip("the C library is not glibc: nothing to set")
    default, retained = _taken("default"), _taken("runner")
    assert default >= 3 * 48 * MIB  # the reference takes both blocks afresh, cycle after cycle
    assert retained < MIB
