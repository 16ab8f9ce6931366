"""Every model README's examples name is one a user has after `make demo` (the shipped models,
registered by the demo) or one a README command registers (`reinstrument train --domain D`)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from infra.tracking import registered_name

ROOT = Path(__file__).resolve().parents[2]


def _registered_by_readme(text: str) -> set[str]:
    names = set()
    for cmd in re.findall(r"reinstrument train (\S+)[^`\n]*", text):
        line = re.search(re.escape(cmd) + r"[^`\n]*", text).group(0)
        domain = re.search(r"--domain (\S+)", line)
        cond = re.search(r"--cond-domain '?([^'\s]+)'?", line)
        if domain:
            names.add(registered_name(domain.group(1), cond.group(1) if cond else None, latent="latent-" in cmd))
    return names


def test_readme_names_only_models_a_user_has():
    text = (ROOT / "README.md").read_text()
    shipped = {p.parent.name for p in (ROOT / "weights").glob("*/card.json")}
    # the registry holds the shipped models (model.pt), not the instrument probe (probe.pt, a metric's weights)
    registered = {json.loads(p.with_name("card.json").read_text())["model"].split("/")[0]
                  for p in (ROOT / "weights").glob("*/model.pt")}
    registered |= _registered_by_readme(text)
    named = set(re.findall(r"models:/([A-Za-z0-9_.-]+)", text))
    assert named, "README names no registered model"
    assert named <= registered, f"README names models nothing registers: {sorted(named - registered)}"
    shipped_named = set(re.findall(r"shipped:([a-z0-9_.-]+)", text))
    assert shipped_named <= shipped, f"README names shipped models weights/ lacks: {sorted(shipped_named - shipped)}"
