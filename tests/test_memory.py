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


# decode a few photos in two worker processes; print whether this process is their parent
WORKERS = """
import os, sys
import numpy as np
from PIL import Image
from artsentry.data.dataset import ImageDataset, make_loader


class ParentPid:
    def __call__(self, img):
        import torch
        return torch.tensor([os.getppid()])


if __name__ == "__main__":
    if sys.argv[1] == "keep":
        from artsentry.memory import keep_freed_memory
        assert keep_freed_memory()
    paths = []
    for i in range(6):
        paths.append(os.path.join(sys.argv[2], f"{i}.png"))
        Image.new("RGB", (64, 48), (i * 40, 90, 200)).save(paths[-1])
    ds = ImageDataset(paths, ParentPid(), targets=list(range(6)))
    batches = list(make_loader(ds, batch_size=2, num_workers=2))
    assert sorted(i for b in batches for i in b.index) == list(range(6))
    print({int(p) for b in batches for p in b.x.flatten()} == {os.getpid()})
"""


@glibc
def test_a_process_that_keeps_freed_memory_does_not_fork_its_heap_into_decoding_workers(tmp_path):
    script = tmp_path / "workers.py"
    script.write_text(WORKERS)

    def forked(mode):
        out = subprocess.run([sys.executable, str(script), mode, str(tmp_path)], capture_output=True, text=True,
                             check=True, timeout=120)
        return out.stdout.strip() == "True"

    assert forked("plain")  # the platform default: workers are forks of this process
    assert not forked("keep")  # they come from a small forkserver instead


def test_available_memory_is_the_kernels_or_a_containers_limit_less_its_use_whichever_is_less(tmp_path):
    from artsentry.memory import available_mib

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20971520 kB\n")
    assert available_mib(str(meminfo), str(tmp_path / "no-cgroup")) == 20480.0
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("8589934592\n")  # 8 GiB, 1 GiB of it in use
    (v2 / "memory.current").write_text("1073741824\n")
    assert available_mib(str(meminfo), str(v2)) == 7168.0
    (v2 / "memory.max").write_text("max\n")  # no limit
    assert available_mib(str(meminfo), str(v2)) == 20480.0
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("4294967296\n")
    (v1 / "memory.usage_in_bytes").write_text("0\n")
    assert available_mib(str(meminfo), str(tmp_path / "v1")) == 4096.0
    assert available_mib(str(tmp_path / "none"), str(tmp_path / "no-cgroup")) is None  # not Linux: not checked
