"""kernels.allocator: importing kernels first makes torch back a 64 MiB tensor with huge pages (counted page
faults in fresh interpreters, no timing); a reader's own setting wins."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import allocator

ROOT = Path(__file__).resolve().parents[2]
PAGES = (64 << 20) // 4096            # 16,384 pages of 4 KiB in one 64 MiB block

# Minor page faults over 5 rounds of "allocate 64 MiB, write it, free it" after one warm-up round, and the status.
PROBE = """
import resource, sys
if sys.argv[1] == "kernels-first":
    import kernels
import torch
from kernels import allocator
torch.zeros(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    x = torch.zeros(16 << 20)
    del x
print(allocator.in_effect(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(allocator.status())
"""


def _probe(order: str, **env) -> tuple[bool, int, str]:
    environ = {k: v for k, v in os.environ.items() if k != allocator.VARIABLE}
    out = subprocess.run([sys.executable, "-c", PROBE, order], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**environ, **env}).stdout.splitlines()
    effect, faults = out[0].split()
    return effect == "True", int(faults), out[1]


@pytest.mark.skipif(allocator.kernel_setting() not in ("always", "madvise"), reason="the kernel has huge pages off")
def test_importing_kernels_first_backs_large_tensors_with_huge_pages():
    effect, faults, status = _probe("kernels-first")
    assert effect and "2 MiB pages" in status
    assert faults < 5 * PAGES // 4, f"{faults} page faults over 5 rounds of 64 MiB: huge pages were not used"


def test_torch_first_or_a_readers_zero_leaves_the_default():
    effect, faults, status = _probe("torch-first")
    assert not effect and "imported before" in status
    effect, faults, status = _probe("kernels-first", THP_MEM_ALLOC_ENABLE="0")
    assert not effect and "is not 1" in status
    if allocator.kernel_setting() == "madvise":       # 4 KiB pages: every fresh 64 MiB block faults page by page
        assert faults > 2 * PAGES, f"only {faults} page faults: the default path was not measured"


def test_kernel_setting_reads_the_bracketed_mode(tmp_path, monkeypatch):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    monkeypatch.setattr(allocator, "THP_SETTING", str(f))
    assert allocator.kernel_setting() == "madvise"
    monkeypatch.setattr(allocator, "THP_SETTING", str(tmp_path / "missing"))
    assert allocator.kernel_setting() is None and not allocator.in_effect()
