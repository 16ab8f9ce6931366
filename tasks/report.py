"""The listening page of a sweep (or of a nightly run, without curves and recommendation): for a few inputs, players for the guide, each grid point's
output and (where the corpus has it) the true target, with spectrograms; the trade-off curves;
the recommendation; the run's parameters and model versions. Plain static HTML with relative
links, so the folder works from a local disk, a pulled copy or an S3 static website."""
from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Example:
    clip_id: str
    guide: str                                     # relative audio paths
    outputs: list[tuple[str, str]]                 # (label, path), e.g. ("τ 0.5, λ 1", "audio/…flac")
    spectrogram: str                               # relative PNG path
    target: str | None = None                      # the true target rendering, when known
    title: str | None = None                       # shown instead of the clip ID


@dataclass
class Report:
    title: str
    params: dict
    models: dict
    recommendation: dict                           # empty: no recommendation section (a nightly run)
    curves_png: str | None
    table: Sequence[dict]
    examples: list[Example] = field(default_factory=list)


def _e(v) -> str:
    return html.escape(str(v))


def _audio(label: str, src: str) -> str:
    return (f'<figure><figcaption>{_e(label)}</figcaption>'
            f'<audio controls preload="metadata" src="{_e(src)}"></audio></figure>')


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))


def render(report: Report) -> str:
    cols = list(report.table[0]) if report.table else []
    rows = "".join("<tr>" + "".join(f"<td>{_e(_fmt(r[c]))}</td>" for c in cols) + "</tr>" for r in report.table)
    examples = "".join(
        f'<section class="ex"><h3 title="{_e(ex.clip_id)}">{_e(ex.title or ex.clip_id)}</h3><div class="players">'
        + _audio("guide (input)", ex.guide)
        + "".join(_audio(label, src) for label, src in ex.outputs)
        + (_audio("true target", ex.target) if ex.target else "")
        + f'</div><img alt="spectrograms of {_e(ex.clip_id)}" src="{_e(ex.spectrogram)}"></section>'
        for ex in report.examples)
    kv = lambda d: "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in d.items())  # noqa: E731
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(report.title)}</title>
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85rem; }} td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
.players {{ display: flex; flex-wrap: wrap; gap: 0.5rem; }} figure {{ margin: 0; }} figcaption {{ font-size: 0.8rem; }}
img {{ max-width: 100%; }} .rec {{ background: #fff3f3; padding: 0.5rem 1rem; border-left: 4px solid crimson; }}
</style></head><body>
<h1>{_e(report.title)}</h1>
{f'<div class="rec"><h2>Recommendation</h2><table>{kv(report.recommendation)}</table></div>' if report.recommendation else ""}
{f'<h2>Trade-off</h2><img alt="JD and FAD against tau_init" src="{_e(report.curves_png)}">' if report.curves_png else ""}
<h2>Listen</h2>{examples}
<h2>Metrics</h2><table><tr>{"".join(f"<th>{_e(c)}</th>" for c in cols)}</tr>{rows}</table>
<h2>Models</h2><table>{kv(report.models)}</table>
<h2>Parameters</h2><table>{kv(report.params)}</table>
</body></html>
"""
