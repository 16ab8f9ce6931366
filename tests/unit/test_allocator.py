"""infra/allocator.py: a compute process keeps freed memory mapped, so a step that frees and
reallocates its buffers stops faulting pages in afresh. Each case runs in a fresh interpreter:
mallopt is process-wide, and the test process's own allocator must stay as it was."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A step's pattern without torch (fast to start): blocks of 1-30 MiB, several alive at once, each
# written through (as a tensor's first write would), all freed, repeated. Prints the minor page
# faults per round after three warm-up rounds, and the pages written per round.
_PROBE = r"""
import ctypes, json, resource, sys
sys.path.insert(0, sys.argv[1])
state = None
if sys.argv[2] == "keep":
    from infra.allocator import keep_freed_memory
    state = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
sizes = [3, 17, 9, 24, 5, 30, 1, 12]

def one_round():
    held = []
    for i, mib in enumerate(sizes):
        p = libc.malloc(mib << 20)
        ctypes.memset(p, 1, mib << 20)
        held.append(p)
        if i % 3 == 2:
            libc.free(held.pop(0))
    for p in held:
        libc.free(p)

for _ in range(3):
    one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    one_round()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"state": state, "faults": faults, "pages": sum(sizes) << 8}))
"""


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT), mode], env=clean | env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_memory_stops_the_page_faults_that_glibcs_default_pays_every_round():
    default, kept = _probe("default"), _probe("keep")
    assert kept["state"] == "kept"
    # glibc's default hands most of each round's blocks back to the kernel and faults them in again
    assert default["faults"] > 0.2 * default["pages"], default
    assert kept["faults"] < 0.01 * kept["pages"], kept


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_users_own_allocator_settings_and_the_off_switch_are_respected():
    own = _probe("keep", MALLOC_ARENA_MAX="2", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert own["state"] == "the environment's own"
    off = _probe("keep", REINSTRUMENT_KEEP_FREED_MEMORY="0")
    assert off["state"] == "off"
    assert off["faults"] > 0.2 * off["pages"], off  # glibc's default behaviour, untouched
