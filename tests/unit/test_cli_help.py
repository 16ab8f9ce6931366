"""Help as a user reads it, on every command: no `<bool>` on a flag (nor on --help), no doubled
negation (`--no-no-…`), no pointer into the source, and off a terminal nothing cut short."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer

from cli import app, tidy_help


def _walk(command, path=()):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


def _help(capsys, plain: bool, path: tuple[str, ...]) -> str:
    command = typer.main.get_command(app)
    tidy_help(command, plain=plain)
    command.main([*path, "--help"], prog_name="reinstrument", standalone_mode=False)
    return capsys.readouterr().out


PATHS = [p for p, _ in _walk(typer.main.get_command(app))]


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "rich"])
def test_no_command_shows_a_bool_type_a_double_negation_or_a_source_file(capsys, plain):
    for path in PATHS:
        text = _help(capsys, plain, path)
        assert "Usage: reinstrument" in text, path
        assert "<bool>" not in text and "bool>" not in text, (path, text)
        assert "--no-no-" not in text, (path, text)
        assert not re.search(r"\b[a-z_]+/[a-z_]+\.py\b", text), (path, text)


def test_off_a_terminal_help_is_never_cut():
    """A pipe gets every option's whole help on one line: URIs whole, no Rich ellipsis."""
    r = subprocess.run([sys.executable, "-m", "cli", "transform", "--help"], capture_output=True, text=True, check=True)
    assert "…" not in r.stdout and "╭" not in r.stdout
    model = next(line for line in r.stdout.splitlines() if line.lstrip().startswith("--model "))
    assert "models:/reinstrument-flute@champion" in model
    vocoder = next(line for line in r.stdout.splitlines() if line.lstrip().startswith("--vocoder "))
    assert vocoder.rstrip().endswith("a vocoder model URI."), vocoder
