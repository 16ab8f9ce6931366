"""The listening page in headless Chromium, end to end: legible spectrogram panels (no label on a
neighbour's panel), the metrics pivoted with intervals, and the blind MUSHRA form — two listeners,
each with an order of their own and the names hidden until they submit — exported as files a
browser downloads, imported with `reinstrument ratings import`, and seen again on the page next to
FAD and JD, with the aggregate the standard asks for."""
from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from infra.storage import Storage
from schemas.ratings import ANCHOR, HIDDEN_REFERENCE
from tasks.audio import encode_flac
from tasks.listening import ListeningInput, write_page
from tasks.plots import tradeoff_png
from tests.e2e.browser import chromium_path, open_page

SR = 16000
POINTS = ("τ 0.8, λ 0", "τ 0.6, λ 0", "plain generation")
# what each listener gives each condition (the hidden reference and the anchor included)
SCORES = {"ana": {"τ 0.8, λ 0": 40, "τ 0.6, λ 0": 70, "plain generation": 55, HIDDEN_REFERENCE: 100, ANCHOR: 10},
          "bo": {"τ 0.8, λ 0": 50, "τ 0.6, λ 0": 80, "plain generation": 45, HIDDEN_REFERENCE: 95, ANCHOR: 20}}


def _tone(f0: float, seconds: float = 2.0, bright: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * sum(bright ** k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(6))).astype(np.float32)


def _page(folder: Path) -> str:
    inputs = []
    for k, (f0, piece) in enumerate(((392.0, "oneills1850/0001-0050.abc#3 · part0 · 0–10 s"),
                                     (440.0, "trecento/landini_ecco.xml · part1 · 10–20 s"))):
        outs = [(p, encode_flac(_tone(f0, bright=0.3 + 0.1 * i), SR), True) for i, p in enumerate(POINTS)]
        inputs.append(ListeningInput(f"clip{k:02d}{'x' * 20}", (_tone(f0, bright=0.8), SR), outs, (_tone(f0, bright=0.2), SR),
                                     title=piece))
    rows = [{"method": "warm_init", "t_init": t, "lam": 0.0, "metric": m, "reference": ref, "n": 16, "mean": v,
             "ci_low": v * 0.9, "ci_high": v * 1.1}
            for t, jd, fad in ((0.8, 0.06, 30.0), (0.6, 0.10, 20.0))
            for m, v, ref in (("jd", jd, "guide"), ("fad", fad, "real flute"))]
    rows += [{"method": "generation", "t_init": 0.0, "lam": 1.0, "metric": m, "reference": ref, "n": 16, "mean": v,
              "ci_low": None, "ci_high": None} for m, v, ref in (("jd", 0.9, "guide"), ("fad", 15.0, "real flute"))]
    png = tradeoff_png({"0": [(0.8, 0.06, 30.0), (0.6, 0.10, 20.0)]}, recommended={"0": 0.6},
                       anchors={"true target": (0.12, 4.0)}, anchor_intervals={"true target": (3.5, 4.6)},
                       intervals={"0": {0.8: (0.05, 0.07, 27.0, 33.0), 0.6: (0.09, 0.11, 18.0, 22.0)}})
    label = {0.8: "τ 0.8, λ 0", 0.6: "τ 0.6, λ 0"}
    return write_page(Storage(str(folder)), "sweep-t-init sw-test", {"sampler": {"name": "dpmpp_2m", "S_tmax": float("inf")},
                                                                      "limit": None, "t_inits": (0.8, 0.6)},
                      {"model": "shipped:instruments-latent"}, {"λ=0": "t_init=0.6"}, rows, inputs, curves_png=png,
                      condition_of=lambda r: "plain generation" if r["method"] == "generation" else label[r["t_init"]])


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path):
    if chromium_path() is None:
        pytest.fail("chromium is missing: `make setup` installs Debian's chromium for this check")
    folder = tmp_path / "report"
    _page(folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/report.html"
    server.shutdown()


GEOMETRY_JS = """JSON.stringify([...document.querySelectorAll('.specs')].map(g => [...g.querySelectorAll('figure.spec')].map(f => {
  const r = f.getBoundingClientRect(), c = f.querySelector('figcaption').getBoundingClientRect(), i = f.querySelector('img');
  const b = i.getBoundingClientRect();
  return {fig: [r.left, r.top, r.right, r.bottom], cap: [c.left, c.top, c.right, c.bottom],
          img: [b.left, b.top, b.right, b.bottom], natural: i.naturalWidth, shown: b.width};
})))"""


def _overlap(a, b) -> bool:
    return a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5


def _rate(s, listener: str) -> list[list[str]]:
    """Fill the form as `listener` (by what each version turns out to be), submit, export; the
    revealed order per trial."""
    s.evaluate(f"document.getElementById('listener').value = {json.dumps(listener)}; document.getElementById('start').click()")
    hidden = s.evaluate("[...document.querySelectorAll('#trials .revealed:not([hidden])')].map(e => e.textContent)"
                        ".filter(t => !t.includes('excellent'))")
    assert hidden == [], f"names shown before submitting: {hidden}"
    assert s.evaluate("document.getElementById('submit').disabled") is True
    # the page holds each version's name only in its script: rate by name through the form's own inputs
    order = s.evaluate("""(() => { const data = JSON.parse(document.getElementById('rating-data').textContent);
        return [...document.querySelectorAll('#trials .trial')].map((div, ti) => [...div.querySelectorAll('.cond audio')]
          .map(a => data.trials[ti].conditions.find(c => a.src.endsWith(c.src)).name)); })()""")
    for ti, names in enumerate(order):
        for k, name in enumerate(names):
            s.evaluate(f"""(() => {{ const el = document.querySelectorAll('#trials .trial')[{ti}].querySelectorAll('input[type=range]')[{k}];
                el.value = {SCORES[listener][name]}; el.dispatchEvent(new Event('input')); }})()""")
    s.evaluate("document.getElementById('submit').click()")
    revealed = s.evaluate("[...document.querySelectorAll('#trials .trial')].map(d => [...d.querySelectorAll('.cond .revealed')]"
                          ".map(e => e.textContent))")
    assert revealed == order
    s.evaluate("document.getElementById('export').click()")
    return order


def test_rate_export_import_and_see_the_scores(served, tmp_path):
    folder, url = served
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    orders = {}
    for listener in SCORES:
        with open_page(url, downloads=str(downloads)) as s:
            if listener == "ana":  # the page as a person sees it, before any rating
                titles = s.evaluate("[...document.querySelectorAll('section.ex h3')].map(h => h.textContent)")
                assert titles[0].startswith("oneills1850/0001-0050.abc#3") and titles[1].startswith("trecento/")
                # the players in the HTML are the page's players (the form's are made when it starts)
                assert s.evaluate("document.querySelectorAll('audio').length") == \
                    (folder / "report.html").read_text().count("<audio") == 2 * (1 + len(POINTS) + 1)
                html = s.evaluate("document.body.innerText")
                assert "None" not in html and "()" not in html and "'name'" not in html and "∞" in html
                assert "0.1 [0.09, 0.11]" in html and "20 [18, 22]" in html  # pivoted: mean [95 % interval]
                for panels in json.loads(s.evaluate(GEOMETRY_JS)):
                    assert len(panels) == 1 + len(POINTS) + 1  # guide, each output, the true target
                    for k, p in enumerate(panels):
                        assert p["shown"] >= 300 and p["natural"] >= 0.9 * p["shown"], p  # legible, not squeezed
                        assert not _overlap(p["cap"], p["img"])
                        for q in panels[k + 1:]:
                            assert not _overlap(p["fig"], q["fig"]) and not _overlap(p["cap"], q["fig"])
                            assert not _overlap(q["cap"], p["fig"])
            orders[listener] = _rate(s, listener)
            deadline = time.time() + 20
            while not list(downloads.glob(f"ratings-*-{listener}.json")):
                assert time.time() < deadline, "the export did not download"
                time.sleep(0.2)
            assert s.errors() == []
    assert orders["ana"] != orders["bo"], "both listeners heard the versions in the same order"
    for listener in SCORES:
        (exported,) = downloads.glob(f"ratings-*-{listener}.json")
        r = subprocess.run([sys.executable, "-m", "cli", "ratings", "import", str(exported), str(folder)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    again = subprocess.run([sys.executable, "-m", "cli", "ratings", "import", str(exported), str(folder)],
                           capture_output=True, text=True)
    assert again.returncode == 0 and len(list((folder / "ratings").glob("*.json"))) == 2  # stored once
    with open_page(url) as s:
        cells = s.evaluate("[...document.querySelectorAll('#ratings tr')].slice(1).map(r => [...r.cells].map(c => c.textContent))")
        metrics = s.evaluate("[...document.querySelectorAll('table.metrics tr')].map(r => [...r.cells].map(c => c.textContent))")
    got = {c[0]: c for c in cells}
    for name in SCORES["ana"]:
        mean = np.mean([SCORES[who][name] for who in SCORES])  # two trials each, the same scores
        assert got[name][1].startswith(f"{mean:.3g}"), (name, got[name])
        assert got[name][2] == "4" and got[name][3] == "2"
    assert metrics[0][-1] == "listening test (MUSHRA)"
    row = next(m for m in metrics if m[0] == "τ 0.6, λ 0")
    assert row[-1].startswith("75") and row[1].startswith("0.1 [")  # the score next to JD and FAD


def test_a_ratings_file_of_another_page_or_condition_is_refused(served, tmp_path):
    folder, _ = served
    page_id = json.loads((folder / "report.json").read_text())["page_id"]
    trial = {"clip_id": "clip00" + "x" * 20, "ratings": [
        {"condition": "τ 0.6, λ 0", "score": 50, "position": 0}, {"condition": HIDDEN_REFERENCE, "score": 99, "position": 1},
        {"condition": ANCHOR, "score": 5, "position": 2}]}
    for pid, t, expected in ((page_id + "x", trial, "made on page"),
                             (page_id, dict(trial, ratings=[dict(trial["ratings"][0], condition="τ 0.3, λ 1")] + trial["ratings"][1:]),
                              "not on this report's form"),
                             (page_id, dict(trial, ratings=trial["ratings"][:2]), "the hidden reference and the anchor")):
        f = tmp_path / "r.json"
        f.write_text(json.dumps({"format": "reinstrument.ratings", "version": 1, "page_id": pid, "listener": "x",
                                 "submitted_at": "2026-12-07T00:00:00Z", "trials": [t]}))
        r = subprocess.run([sys.executable, "-m", "cli", "ratings", "import", str(f), str(folder)], capture_output=True, text=True)
        assert r.returncode == 1 and expected in r.stderr.strip().splitlines()[-1], r.stderr
    assert not (folder / "ratings").exists()
