"""Every in-process measurement of `make bench` runs under the allocator setting that the
product's compute processes use (infra/allocator.py): the pipeline's workers set it when they
start, so a floor or a baseline timed in this process must run under it too, whichever benchmark
happens to run first. test_bench_training.py measures the setting itself in fresh interpreters."""
import pytest

from infra.allocator import keep_freed_memory


@pytest.fixture(scope="session", autouse=True)
def _compute_process_allocator():
    print(f"\n[bench] freed memory: {keep_freed_memory()} (infra/allocator.py)")
    yield
