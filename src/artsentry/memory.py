"""Keep freed memory in the process instead of handing it back to the kernel.

Every training step and every batch of inference allocates activation tensors of tens
of megabytes and frees them again. glibc's malloc serves blocks that large with ``mmap``
and returns them with ``munmap`` on ``free``, so the next batch faults every page in
afresh and the kernel zeroes it: training lite0 at 320 px faulted ~535,000 pages a
second here, and a third of the CPU time went to the kernel (BENCHMARKS.md, "Freed
memory kept in the process"). ``keep_freed_memory()`` tells malloc to serve every block
from its heap and not to trim the heap's top, so freed blocks are reused. Resident
memory then stays at its peak, which the peak run already had to fit.

The ``artsentry`` command calls it at start-up; a program using the library can call it
itself (its decoding workers then come from a forkserver, so its main module needs the
``if __name__ == "__main__":`` guard). Only glibc has these settings:
elsewhere, or with ``ARTSENTRY_KEEP_FREED_MEMORY=0`` in the environment, it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

ENV = "ARTSENTRY_KEEP_FREED_MEMORY"


_keeping = False


def keeping_freed_memory() -> bool:
    """Whether ``keep_freed_memory()`` took effect in this process."""
    return _keeping


def keep_freed_memory() -> bool:
    """Configure glibc's malloc to reuse freed memory; True when it took effect.

    Decoding workers then start from a forkserver, not as forks that would inherit the kept
    heap (``data.dataset.worker_context``)."""
    global _keeping
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # no mmap for large blocks (glibc still falls back to it when its heap cannot grow),
    # and never give the heap's free top back (the largest value mallopt takes)
    _keeping = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _keeping


def available_mib(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> float | None:
    """Memory a process could take now, in MiB: the kernel's ``MemAvailable``, or a container's cgroup limit
    less its use when that is less; None where neither can be read (not Linux)."""
    found = []
    try:
        with open(meminfo, encoding="ascii") as fh:
            found += [int(line.split()[1]) / 1024 for line in fh if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    for limit, used in (("memory.max", "memory.current"),  # cgroup v2
                        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # v1
        try:
            with open(os.path.join(cgroup, limit), encoding="ascii") as a, \
                    open(os.path.join(cgroup, used), encoding="ascii") as b:
                found.append((int(a.read().strip()) - int(b.read().strip())) / 2**20)
            break
        except (OSError, ValueError):  # no such file, or "max": no limit
            continue
    return min(found) if found else None
