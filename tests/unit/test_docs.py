"""The docs cannot drift from the product: every `reinstrument …` command in README's and docs/'
code blocks and command tables names a real command and real options (parsed against the CLI,
never run), and every link between the docs resolves, anchors included."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _cli():
    from cli import app

    return typer.main.get_command(app)


def _commands(text: str) -> list[str]:
    """`reinstrument …` in fenced code blocks (continued lines joined) and in inline code."""
    out = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            line = pending + " " + line if pending else line.split(" #")[0].strip()
            if not line.startswith("reinstrument "):
                continue
            try:
                shlex.split(line)
                out.append(line)
                pending = ""
            except ValueError:     # a quoted argument that goes on over the next lines
                pending = line
    for c in re.findall(r"`(reinstrument [^`]+)`", text):
        if "…" not in c and "..." not in c:   # a table's `a\|b`: its first alternative
            out.append(re.sub(r"(\S+?)(\\\|\S+)+", r"\1", c))
    return out


def _check(group, line: str) -> str | None:
    """None if LINE names a command and only options it has; else what is wrong."""
    try:
        words = shlex.split(line.split("|")[0].split(">")[0].split("&&")[0])[1:]
    except ValueError as e:
        return f"unparsable ({e})"
    cmd = group   # typer's own click classes: told apart by what they hold, not by type
    while hasattr(cmd, "commands") and words and not words[0].startswith("-"):
        if words[0] not in cmd.commands:
            return f"no command {words[0]!r}"
        cmd, words = cmd.commands[words[0]], words[1:]
    if hasattr(cmd, "commands"):
        return None if not words or words[0] in ("--help", "-h") else f"{words[0]!r} after a command group"
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    bad = [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in known]
    if bad:
        return f"{cmd.name} has no option {', '.join(bad)}"
    if "--help" in words:
        return None
    # parsed as the CLI parses it: the docs speak the current vocabulary, never an old spelling
    # that the CLI still accepts (hidden, with a deprecation notice: cli/common.old_spelling)
    ctx = cmd.make_context(cmd.name, list(words), resilient_parsing=True)
    old = [p.opts[0] if p.opts[0].startswith("-") else p.metavar for p in cmd.params
           if getattr(p, "hidden", False) and ctx.params.get(p.name) not in (None, False, (), [])]
    return f"{cmd.name}: old spelling {', '.join(old)} (see its --help)" if old else None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_documented_command_exists_with_its_options(doc):
    group = _cli()
    wrong = [f"{line}  <- {why}" for line in _commands(doc.read_text()) if (why := _check(group, line))]
    assert not wrong, "\n".join(wrong)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    h = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_link_between_the_docs_resolves(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    wrong = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            wrong.append(f"{target}: no file {file.relative_to(ROOT) if ROOT in file.parents else file}")
        elif anchor and file.suffix == ".md":
            slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)}
            if anchor not in slugs:
                wrong.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not wrong, "\n".join(wrong)


NOTEBOOK = re.compile(r"\b(?:issue|stop) \d+\b|\bthis (?:stop|wave)\b|/work/|\.\./shared|\bI (?:have|did|ran|tried|think)\b",
                      re.I)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_docs_are_documentation_not_a_lab_notebook(doc):
    """No issue or stop numbers, no developer paths, no first-person notes: the history is CHANGELOG.md's."""
    hits = [f"{doc.name}:{n}: {line.strip()[:120]}" for n, line in enumerate(doc.read_text().splitlines(), 1)
            if NOTEBOOK.search(line)]
    assert not hits, "\n".join(hits)


def test_readme_is_short_and_has_its_three_quickstarts():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 400
    for heading in ("## Your own recordings", "## Nightly on Prefect, outputs on S3", "## Measured limits",
                    "## Architecture", "## Commands"):
        assert heading in text, heading
    assert "make demo" in text and (ROOT / "CHANGELOG.md").is_file()


def test_no_tracked_file_refers_to_a_file_outside_the_repository():
    """The product carries its own design notes: nothing tracked points at a sibling folder's
    files (the notes the project was planned from live outside it)."""
    import subprocess

    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    outside = re.compile(r"\.\./shared|\b(?:DESIGN|ENVIRONMENT|STYLE)\.md\b")
    hits = []
    for rel in filter(None, files.split("\0")):
        path = ROOT / rel
        if path.suffix in (".pt", ".png", ".flac", ".wav", ".onnx", ".lock") or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{rel}:{n}" for n, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert not hits, hits
