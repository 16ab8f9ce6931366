"""One vocabulary across commands (docs/commands.md): the same option for the same concept on every
command, and every old spelling a hidden option that still works and says it is old."""
from __future__ import annotations

import re

import pytest
import typer

from cli import app, tidy_help
from cli.common import DEPRECATED


def _commands():
    def walk(command, path=()):
        if hasattr(command, "commands"):
            for name, sub in sorted(command.commands.items()):
                yield from walk(sub, (*path, name))
        else:
            yield " ".join(path), command
    return dict(walk(typer.main.get_command(app)))


COMMANDS = _commands()
# commands that write nothing, or write where their object lives (shipped ship: weights/<folder>)
NO_OUTPUT = {"config show", "inspect", "metrics copy-synthesis", "shipped list", "shipped register", "shipped ship",
             "warm-probe", "ratings import"}
TRAINING = {"train", "train-vocoder", "train-autoencoder"}


def _options(command, hidden: bool = False) -> dict[str, object]:
    return {o: p for p in command.params if bool(getattr(p, "hidden", False)) == hidden
            for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


def test_outputs_are_out_everywhere():
    for name, command in COMMANDS.items():
        visible = _options(command)
        assert not {"--dest", "--root", "--output", "--out-dir"} & set(visible), name
        if name not in NO_OUTPUT:
            assert "--out" in visible, f"{name} writes but has no --out"
        visible_args = [p for p in command.params if p.param_type_name == "argument" and not p.hidden]
        assert not [p.name for p in visible_args if p.name in ("dest", "out", "out_wav")], name


def test_step_counts_models_instruments_and_parallelism_mean_one_thing():
    for name, command in COMMANDS.items():
        visible = _options(command)
        if name in TRAINING:  # optimiser steps
            assert "--train-steps" in visible and "--steps" not in visible, name
        elif "--steps" in visible:  # reverse (sampling) steps
            assert re.search(r"reverse steps|N reverse", visible["--steps"].help or "", re.I), (name, visible["--steps"].help)
        if "--target" in visible:  # an instrument, never a model
            assert "instrument" in (visible["--target"].help or ""), (name, visible["--target"].help)
        if "--model" in visible:
            assert re.search(r"model|URI", visible["--model"].help or ""), name
        if "--actors" in visible:
            assert "actors" in (visible["--actors"].help or "").lower(), name
        if "--workers" in visible:  # Ray Train's workers only
            assert name in TRAINING, f"{name}: --workers means Ray Train workers; processes are --processes"
        assert "--local" not in visible and "--nightly-inputs" not in visible, name
    for name in ("transform", "sweep", "compare", "nightly", "serve"):
        assert "--inputs" in _options(COMMANDS[name]), name


def test_every_old_spelling_is_hidden_and_names_its_new_one():
    found = 0
    for name, command in COMMANDS.items():
        visible = _options(command)
        for p in command.params:
            if not getattr(p, "hidden", False):
                continue
            found += 1
            m = re.match(rf"{DEPRECATED} (--[\w-]+)", p.help or "")
            assert m and m.group(1) in visible, (name, p.name, p.help)
    assert found >= 10


@pytest.mark.parametrize("plain", [True, False])
def test_help_never_shows_an_old_spelling(capsys, plain):
    command = typer.main.get_command(app)
    tidy_help(command, plain=plain)
    for path in (("corpus", "build"), ("ingest",), ("pull",), ("train",), ("serve",), ("features",)):
        command.main([*path, "--help"], prog_name="reinstrument", standalone_mode=False)
        text = capsys.readouterr().out
        assert not re.search(r"--dest\b|--root\b|--local\b|--nightly-inputs|\bDEST\b|--steps\b", text), (path, text)


def _run(capsys, *args: str) -> tuple[int, str]:
    from cli import main

    with pytest.raises(SystemExit) as e:
        import sys
        argv, sys.argv = sys.argv, ["reinstrument", *args]
        try:
            main()
        finally:
            sys.argv = argv
    return e.value.code, capsys.readouterr().err


def test_an_old_spelling_still_works_with_a_one_line_notice(capsys, tmp_path):
    # the positional DEST of pull: moved to --out, said once, then the command runs on as before
    code, err = _run(capsys, "pull", str(tmp_path / "no-such-run"), str(tmp_path / "d"))
    assert "notice: the positional DEST is deprecated; use --out" in err and code == 1
    assert "no-such-run" in err.splitlines()[-1]
    # both spellings, different values: a usage mistake
    code, err = _run(capsys, "pull", str(tmp_path / "r"), str(tmp_path / "a"), "--out", str(tmp_path / "b"))
    assert code == 2 and "DEST is the old spelling of --out" in err
    # train's optimiser steps: --steps still reaches the config (here: refused as out of range)
    code, err = _run(capsys, "train-vocoder", str(tmp_path), "--steps", "0", "--no-prefect")
    assert "notice: --steps is deprecated; use --train-steps" in err and code == 2 and "steps" in err.splitlines()[-1]
