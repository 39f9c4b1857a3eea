"""The runner keeps freed memory for the next frames: a delta frame after a key frame no longer
takes fresh pages from the kernel (a page fault each). Measured in fresh processes, one with
the C library's default thresholds as the reference, one with the runner's setting."""

import json
import subprocess
import sys

import pytest

from nas.allocator import retain_freed_memory

SCRIPT = r"""
import json, resource, sys
import torch
from nas.graph import layer_graph
from nas.runner import DeltaRunner
from nas.supernet import DeltaModel
from nas.teachers import load_teacher
from search_spaces import build_candidate
import nas.runner

if sys.argv[1] == "default":
    nas.runner.retain_freed_memory = lambda: False  # the reference: glibc's own thresholds
torch.set_num_threads(2)
size = (520, 520)
teacher = load_teacher("deeplabv3")
layers = layer_graph(teacher.module, size)


def cheap(layer, conv):  # a half-resolution block on every layer, as the cheapest specs have
    kind = "down2_lowrank_r2" if layer.groups == 1 else "full"
    return build_candidate(kind, layer, weight=conv.weight.detach())


model = DeltaModel.build(teacher.module, layers, cheap, output_key=teacher.output_key)
runner = DeltaRunner(model, interval=3, channels_last=True)
g = torch.Generator().manual_seed(0)
frames = [torch.randn(1, 3, *size, generator=g) for _ in range(3)]
faults = []
for cycle in range(6):
    for x in frames:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        runner.step(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(sum(faults[-9:])))  # the last three key-frame cycles
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_runner_frames_reuse_freed_memory():
    if not retain_freed_memory():
        pytest.skip("the C library is not glibc: nothing to set")
    default, retained = _faults("default"), _faults("retain")
    assert default > 5000  # the reference takes fresh pages on every cycle
    assert retained < default / 5
