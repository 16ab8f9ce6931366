"""What the CLI prints stays copyable off a terminal (a pipe, a log file, CI): rich assumes 80
columns there, and a wrapped path or command could not be pasted back."""
import os
import subprocess
import sys


def test_a_long_path_printed_into_a_pipe_is_one_line():
    path = "/data/" + "/".join(f"level-{i:02d}" for i in range(20)) + "/report/report.html"  # ~190 characters
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    res = subprocess.run([sys.executable, "-c", f"from cli.common import console; console.print('report:    ' + {path!r})"],
                         capture_output=True, text=True, env=env, check=True)
    assert res.stderr.splitlines() == [f"report:    {path}"]


def test_a_wide_table_printed_into_a_pipe_keeps_every_cell_on_one_line():
    code = ("from cli.common import print_rows; print_rows([{f'column {i}': f'value {i} (0.041-0.064)' for i in range(6)}]"
            " * 2, 'six columns, and a title longer than eighty characters, which stays on one line too')")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    rows = [line for line in out.splitlines() if "value 0" in line]
    assert len(rows) == 2 and all(f"value {i} (0.041-0.064)" in rows[0] for i in range(6)), out
    assert any(line.strip() == "six columns, and a title longer than eighty characters, which stays on one line too"
               for line in out.splitlines()), out


def test_an_empty_section_in_a_config_file_means_its_defaults(tmp_path):
    """`"performance": {}` in a --config file asks for PerformanceConfig's defaults; it was once
    dropped, and a corpus meant to vary its performances was rendered as written."""
    import json

    from cli.common import load_config
    from schemas.configs import CorpusConfig, PerformanceConfig

    f = tmp_path / "corpus.json"
    f.write_text(json.dumps({"performance": {}, "max_pieces": 2}))
    assert load_config(CorpusConfig, f).performance == PerformanceConfig()
    assert load_config(CorpusConfig, None).performance is None  # not given: the default, None
    assert load_config(CorpusConfig, None, performance={}).performance is None  # an option's {} is 'not given'
