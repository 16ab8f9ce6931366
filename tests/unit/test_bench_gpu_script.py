"""`make bench-gpu` only means something on a lent GPU, which comes rarely and briefly: its script
is run here on the CPU with the tiny presets (--smoke), so every section's code path (the solver's
step for the three model kinds, the transform with the shipped models, a DDP rank) still works
when a GPU arrives."""
import re

from tests.benchmarks import bench_gpu


def test_every_section_of_the_gpu_bench_runs_on_the_cpu(capsys):
    bench_gpu.ROWS.clear()
    assert bench_gpu.main(["--smoke"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == len(bench_gpu.SECTIONS), out
    for row in table:
        assert re.search(r"\| [\d,.]+(x real time| samples/s) \|", row), row


def test_without_a_gpu_the_bench_says_so_instead_of_measuring_the_cpu(capsys, monkeypatch):
    monkeypatch.setattr(bench_gpu.torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main([]) == 2
    assert "no CUDA device here" in capsys.readouterr().out
