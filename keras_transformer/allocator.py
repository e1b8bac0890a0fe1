"""Freed memory kept for reuse: no page faults for large tensors on Linux.

glibc's malloc serves every block above its mmap threshold (128 KiB, raised
on the fly up to 32 MiB), and every block over 64 MiB that a thread other
than the main one asks for, with fresh pages from the kernel, and gives
them back on free; it also trims a free top of its heap above 128 KiB.
PyTorch on a CPU takes every tensor from malloc, and XLA on JAX takes its
per-step buffer (640 MiB at `small`, 6.1 GB at `base`) in a worker thread,
so each training step faults in new pages: 96,000 a step on PyTorch and
163,000 on JAX at `small`, on a 2-core host where a float32 `x * 0.5`
over `(64, 32, 8000)` logits took 28 ms, and 3.3 ms with the memory kept.
TensorFlow's oneDNN kernels take their memory from TensorFlow's own caching
allocator: it neither gains nor loses.

The setting belongs to the process, not to a model: the command line makes
it at start-up, and a program that trains on PyTorch or JAX calls
`reuse_freed_memory()` once, first (docs/precision.md has the figures).
"""

import ctypes
import ctypes.util

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1
_NEVER = -1  # M_TRIM_THRESHOLD: no trimming at all


def reuse_freed_memory(largest_block=2**30):
    """Has glibc's malloc keep freed blocks of up to `largest_block` bytes.

    Blocks below `largest_block` come from the heap instead of fresh
    mappings, and freed memory stays with the process for the next tensor
    instead of going back to the kernel: the resident memory stays at its
    peak, which it exceeds by what fragmentation costs (measured over 40
    `small` training steps of two shapes: 240 to 260 MiB).

    Blocks above it (XLA's 6.1 GB per-step buffer on JAX at `base`) are still
    mapped afresh: taken from the heap (no mapping at all), such a block
    made `train_on_batch` 1.4x to 1.5x faster, but under `fit` the heap
    grew to 18.9 GB and the step was no faster (docs/precision.md).

    Args:
        largest_block: int. Bytes; at most 2**31 - 1. Default 1 GiB.

    Returns:
        bool: True when it took effect; False where malloc is not glibc's
        (macOS, musl), which is left as it is.
    """
    if not 0 < largest_block <= _INT_MAX:
        raise ValueError(f"largest_block must be in [1, 2**31 - 1]. Received: {largest_block}")
    libc = _glibc()
    if libc is None:
        return False
    settings = (
        (_M_MMAP_THRESHOLD, largest_block),
        # Trimming the heap's top would hand the kept blocks back: never.
        # The largest threshold, 2 GiB, still let a `base` step on PyTorch
        # trim 2.3 GiB and fault it back in.
        (_M_TRIM_THRESHOLD, _NEVER),
        # Threads made from now on share the main heap, whose blocks follow
        # the threshold; a thread's own arena maps every block over 64 MiB
        # afresh (XLA's per-step buffers on JAX: 640 MiB at `small`).
        (_M_ARENA_MAX, 1),
    )
    return all([libc.mallopt(option, value) for option, value in settings])


def _glibc():
    """The C library of this process when it is glibc (it has `gnu_get_libc_version`), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
