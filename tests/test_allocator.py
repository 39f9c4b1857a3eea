"""Freed memory stays in the process for reuse once a runner exists: allocations that glibc's
own thresholds serve from fresh pages (a page fault each) reuse freed ones. Measured in fresh
processes that do the same, one with the C library's default thresholds as the reference."""

import json
import subprocess
import sys

import pytest

from nas.allocator import retain_freed_memory
from tests.conftest import REPO

# A runner is made (its setting taken, or in the reference not), then two 24 MiB tensors are
# made and freed per cycle: by default glibc trims the freed top of its heap (twice its adaptive
# threshold) and maps fresh pages for the next cycle.
SCRIPT = r"""
import json, resource, sys
import torch
import nas.runner
from nas.graph import layer_graph
from nas.runner import DeltaRunner
from nas.supernet import DeltaModel
from search_spaces import build_candidate
from tests.conftest import build_tiny

if sys.argv[1] == "default":
    nas.runner.retain_freed_memory = lambda: False
net = build_tiny()
full = lambda layer, conv: build_candidate("full", layer, weight=conv.weight.detach())
DeltaRunner(DeltaModel.build(net, layer_graph(net, (32, 32)), full), interval=2)
faults = []
for cycle in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a, b = torch.ones(6 << 20), torch.ones(6 << 20)
    del a, b
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(sum(faults[-3:])))
"""


def _faults(mode: str) -> int:
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
    default, retained = _faults("default"), _faults("runner")
    assert default > 6000  # the reference takes fresh pages cycle after cycle (6,144 a tensor)
    assert retained < 500
