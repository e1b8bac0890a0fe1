"""`reuse_freed_memory`: a freed large block is reused, without new page faults."""

import subprocess
import sys

import pytest
from helpers import runs_once

from keras_transformer import allocator, cli

# Page faults taken by allocating and touching 128 MiB a second time, after
# freeing the first, in the main thread and in a thread started afterwards.
FAULTS_ON_REUSE = """
import resource, sys, threading
import numpy as np
from keras_transformer.allocator import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
faults = []
def allocate_twice():
    block = np.ones(1 << 25, dtype=np.float32)
    del block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(1 << 25, dtype=np.float32)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
allocate_twice()
thread = threading.Thread(target=allocate_twice)
thread.start()
thread.join()
print(*faults)
"""


def faults_counted(script, *args):
    """The fault counts a script prints, run in a process of its own."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    return [int(count) for count in result.stdout.split()]


@runs_once
@pytest.mark.skipif(allocator._glibc() is None, reason="malloc is not glibc's here")
def test_a_freed_block_is_reused_without_page_faults():
    # glibc alone maps 128 MiB afresh each time: 32,768 faults in 4 KiB pages, 64 in huge pages.
    system, reused = (
        faults_counted(FAULTS_ON_REUSE, "system"),
        faults_counted(FAULTS_ON_REUSE, "reuse"),
    )
    for thread, before, after in zip(("main", "other"), system, reused, strict=True):
        assert after < before / 10, (thread, before, after)


# Page faults taken by touching 700 MiB again after three such blocks were
# freed together: the heap's top then holds 2.1 GiB free, more than the
# largest trim threshold mallopt takes (2 GiB) but not more than "never".
FAULTS_AFTER_A_LARGE_FREE = """
import resource
import numpy as np
from keras_transformer.allocator import reuse_freed_memory
assert reuse_freed_memory()
blocks = [np.ones(700 << 20, dtype=np.uint8) for _ in range(3)]
del blocks
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.ones(700 << 20, dtype=np.uint8)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@runs_once
@pytest.mark.skipif(allocator._glibc() is None, reason="malloc is not glibc's here")
def test_the_heap_is_not_trimmed_after_a_large_free():
    # Trimmed, the block faults in again: 179,200 pages of 4 KiB, or 350 and
    # more where numpy's blocks take 2 MiB pages (measured: 829).
    (faults,) = faults_counted(FAULTS_AFTER_A_LARGE_FREE)
    assert faults < 50, faults


@runs_once
def test_a_bad_block_size_is_refused():
    with pytest.raises(ValueError, match="Received: 4294967296"):
        allocator.reuse_freed_memory(2**32)


@runs_once
def test_the_command_line_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "reuse_freed_memory", lambda: calls.append(True))
    assert cli.main(["presets", "--vocab-size", "100"]) == 0
    assert calls == [True]
