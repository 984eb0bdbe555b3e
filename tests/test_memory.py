import os
import platform
import subprocess
import sys

import pytest

from artsentry.memory import ENV, keep_freed_memory

# allocate, touch and free a 64 MB tensor over and over; print the page faults of the last
# four rounds (glibc's aligned allocations settle into reusing their freed blocks after a few)
PROBE = """
import resource, sys
import torch
if sys.argv[1] == "keep":
    from artsentry.memory import keep_freed_memory
    assert keep_freed_memory()
for _ in range(12):
    torch.ones(16 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.ones(16 * 2**20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def _faults(mode: str, **env) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return int(out.stdout)


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    pages = 4 * 64 * 2**20 // 4096
    assert _faults("plain") >= pages // 2  # glibc hands every block back and faults it in anew
    assert _faults("keep") < pages // 20


@glibc
def test_the_environment_switches_it_off(monkeypatch):
    monkeypatch.setenv(ENV, "0")
    assert keep_freed_memory() is False
