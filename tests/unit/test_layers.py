"""The architecture, enforced by reading every product module's imports (README "Architecture"):
imports point down the layers only, there is no import circle, tasks/ stays pure (no Prefect,
Ray or MLflow), and only infra/ talks to MLflow's client."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Lowest first: a module may import its own layer and the layers before it.
LAYERS = ["schemas", "infra", "tasks", "ray_actors", "jobs", "flows", "cli"]
PURE_FORBIDDEN = {"prefect", "ray", "mlflow"}


def modules() -> dict[str, Path]:
    out = {}
    for layer in LAYERS:
        for p in sorted((ROOT / layer).rglob("*.py")):
            out[".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = p
    return out


def imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute import of the file, function-level ones included (a lazy import is still a dependency)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, node.lineno)] + [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


def test_imports_point_down_only_and_tasks_stay_pure():
    mods, problems = modules(), []
    for name, path in mods.items():
        mine = LAYERS.index(name.split(".")[0])
        for target, line in imports(path):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if top in LAYERS and LAYERS.index(top) > mine:
                problems.append(f"{where} (layer {top} is above {name.split('.')[0]})")
            if name.startswith("tasks") and top in PURE_FORBIDDEN:
                problems.append(f"{where} (tasks/ is pure: no Prefect, Ray or MLflow)")
            if top == "mlflow" and not name.startswith(("infra", "jobs.pyfunc")):
                problems.append(f"{where} (MLflow only through infra/tracking.py)")
    assert not problems, "\n".join(problems)


def test_no_import_circle():
    mods = modules()
    edges = defaultdict(set)
    for name, path in mods.items():
        for target, _ in imports(path):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges[name].add(target)
    state: dict[str, int] = {}
    circles = []

    def visit(v: str, stack: list[str]) -> None:  # depth-first; a grey node reached again closes a circle
        state[v] = 1
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                circles.append(" -> ".join(stack[stack.index(w):] + [v, w]) if w in stack else f"{v} -> {w}")
            elif w not in state:
                visit(w, stack + [v])
        state[v] = 2

    for v in sorted(mods):
        if v not in state:
            visit(v, [])
    assert not circles, "\n".join(circles)


def test_the_layering_test_sees_a_violation(tmp_path):
    """The reader is not blind: an upward and a forbidden import in a snippet are both found."""
    p = tmp_path / "m.py"
    p.write_text("import os\nfrom jobs.train import train_job\n\ndef f():\n    import mlflow\n")
    assert [t for t, _ in imports(p)] == ["os", "jobs.train", "jobs.train.train_job", "mlflow"]


def test_benchmarks_and_scripts_parse():
    """`make test` does not run tests/benchmarks; a file there that stops parsing (it happened:
    a mis-indented import) would only surface when someone runs `make bench` on a lent GPU."""
    broken = []
    for p in sorted((ROOT / "tests").rglob("*.py")):
        try:
            ast.parse(p.read_text(), filename=str(p))
        except SyntaxError as e:
            broken.append(f"{p.relative_to(ROOT)}:{e.lineno}: {e.msg}")
    assert not broken, "\n".join(broken)
