"""The listening page of a sweep, a comparison or a nightly run: for a few inputs, players for
the guide, each output and (where known) the true target, with one legible spectrogram per
panel; the trade-off plot; the recommendation; a metrics table with one row per method or grid
point (mean and 95 % interval per metric); a blind MUSHRA rating form whose ratings `reinstrument
ratings import` brings back as a column next to FAD and JD; the run's parameters and models.
Plain static HTML with relative links, so the folder works from a local disk, a pulled copy or an
S3 static website. The page's data is kept beside it (report.json) so that it can be rendered
again when ratings arrive."""
from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from schemas.ratings import ANCHOR, HIDDEN_REFERENCE, RATINGS_FORMAT, RatingsSummary
from tasks.rating_form import FORM_JS


@dataclass
class Example:
    clip_id: str
    guide: str                                     # relative audio paths
    outputs: list[tuple[str, str]]                 # (label, path), e.g. ("τ 0.5, λ 1", "audio/…flac")
    spectrograms: list[tuple[str, str]]            # (label, PNG path) per panel, the guide's first
    target: str | None = None                      # the true target rendering, when known
    title: str | None = None                       # shown instead of the clip ID
    anchor: str | None = None                      # the rating form's low anchor (the target low-passed)
    group: str | None = None                       # e.g. a comparison's task: part of each condition's name

    def condition(self, label: str) -> str:
        return f"{self.group} · {label}" if self.group else label

    def versions(self) -> list[tuple[str, str]]:
        """What the rating form plays for this example: (condition, audio path) per output, then
        the hidden reference and the anchor."""
        return [(self.condition(label), src) for label, src in self.outputs] + [(HIDDEN_REFERENCE, self.target),
                                                                               (ANCHOR, self.anchor)]

    def rated(self) -> bool:
        return self.target is not None and self.anchor is not None and bool(self.outputs)


@dataclass
class Report:
    title: str
    params: dict
    models: dict
    recommendation: dict                           # empty: no recommendation section (a nightly run)
    curves_png: str | None
    table: Sequence[dict]                          # pivoted: one row per condition (see `pivot`)
    examples: list[Example] = field(default_factory=list)
    page_id: str = ""                              # what a ratings file names to be imported here
    ratings: dict | None = None                    # a RatingsSummary's fields, once ratings were imported
    mlflow_run_id: str | None = None               # the run the page belongs to: imported ratings are logged there

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Report":
        data = json.loads(text)
        data["examples"] = [Example(**{k: [tuple(x) for x in v] if k in ("outputs", "spectrograms") else v
                                       for k, v in e.items()}) for e in data["examples"]]
        return cls(**data)

    def conditions(self) -> dict[str, list[str]]:
        """What the rating form plays per clip: each output's condition, the hidden reference, the anchor."""
        return {e.clip_id: [name for name, _ in e.versions()] for e in self.examples if e.rated()}


LONG_FORM = ("metric", "mean", "ci_low", "ci_high")


def show(v) -> str:
    """A value as a person reads it: no Python reprs (None, (), {'name': …}, inf)."""
    if v is None or v == () or v == [] or v == {}:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "∞" if math.isinf(v) else ("–" if math.isnan(v) else f"{v:.3g}")
    if isinstance(v, dict):
        return ", ".join(f"{k} {show(x)}" for k, x in v.items() if x is not None)
    if isinstance(v, (list, tuple)):
        return ", ".join(show(x) for x in v)
    return str(v)


def flat(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as `sampler.name: heun` lines."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = show(v)
    return out


def with_interval(mean, lo, hi) -> str:
    if mean is None:
        return "–"
    if lo is None or hi is None or lo == hi:
        return show(float(mean))
    return f"{float(mean):.3g} [{float(lo):.3g}, {float(hi):.3g}]"


def pivot(rows: Sequence[dict], condition_of: Callable[[dict], str] | None = None) -> list[dict]:
    """Long-form metric rows (metric, mean, ci_low, ci_high per row) as one row per condition
    with a `mean [lo, hi]` column per metric, in the rows' order; rows that are not long-form
    (a nightly's runs, a comparison's summary) are shown as they are, values made readable."""
    if not rows or not all(k in rows[0] for k in LONG_FORM):
        return [{k: show(v) for k, v in r.items()} for r in rows]
    refs: dict[str, set] = {}
    for r in rows:
        refs.setdefault(r["metric"], set()).add(r.get("reference"))

    def column(r: dict) -> str:  # a metric scored against two references gets a column for each
        return f"{r['metric']} ({r['reference']})" if len(refs[r["metric"]]) > 1 else r["metric"]

    table: dict[str, dict] = {}
    for r in rows:
        name = condition_of(r) if condition_of else str(r.get("method"))
        entry = table.setdefault(name, {"condition": name})
        entry[column(r)] = with_interval(r["mean"], r["ci_low"], r["ci_high"])
    metrics = list(dict.fromkeys(column(r) for r in rows))
    return [{"condition": e["condition"], **{m: e.get(m, "–") for m in metrics}} for e in table.values()]


def _e(v) -> str:
    return html.escape(str(v))


def _audio(label: str, src: str) -> str:
    return (f'<figure class="player"><figcaption>{_e(label)}</figcaption>'
            f'<audio controls preload="metadata" src="{_e(src)}"></audio></figure>')


def _example(ex: Example) -> str:
    panels = "".join(f'<figure class="spec"><figcaption>{_e(label)}</figcaption>'
                     f'<img alt="log-mel spectrogram: {_e(label)}" src="{_e(src)}"></figure>'
                     for label, src in ex.spectrograms)
    return (f'<section class="ex"><h3 title="{_e(ex.clip_id)}">{_e(ex.title or ex.clip_id)}</h3><div class="players">'
            + _audio("guide (input)", ex.guide) + "".join(_audio(label, src) for label, src in ex.outputs)
            + (_audio("true target", ex.target) if ex.target else "") + f'</div><div class="specs">{panels}</div></section>')


def condition_of_row(r: dict) -> str:
    """The rated condition a table row shows: a pivoted row's own, a comparison's 'task · method'."""
    if "condition" in r:
        return r["condition"]
    return f"{r['task']} · {r['method']}" if "task" in r and "method" in r else str(r.get("method", ""))


def _table(rows: Sequence[dict], ratings: dict[str, str] | None = None) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    cols = list(rows[0]) + (["listening test (MUSHRA)"] if ratings else [])
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c, ''))}</td>" for c in cols[:len(rows[0])])
                   + (f"<td>{_e(ratings.get(condition_of_row(r), '–'))}</td>" if ratings else "")
                   + "</tr>" for r in rows)
    return f'<table class="metrics"><tr>{"".join(f"<th>{_e(c)}</th>" for c in cols)}</tr>{body}</table>'


def _ratings_section(summary: RatingsSummary) -> str:
    rows = "".join(f"<tr><td>{_e(r.condition)}</td><td>{_e(with_interval(r.mean, r.ci_low, r.ci_high))}</td>"
                   f"<td>{r.scores}</td><td>{r.listeners}</td></tr>" for r in summary.rows)
    excluded = "".join(f"<li>{_e(x)}</li>" for x in summary.excluded)
    return (f'<h2>Listening test</h2><p>{summary.listeners} listener(s) kept of {summary.listeners + len(summary.excluded)}'
            f' (MUSHRA, 0–100, mean [95 % interval])</p><table id="ratings"><tr><th>condition</th><th>score</th>'
            f"<th>scores</th><th>listeners</th></tr>{rows}</table>" + (f"<p>Left out by post-screening:</p><ul>{excluded}</ul>"
                                                                      if excluded else ""))


def _form(report: Report) -> str:
    trials = [{"clip_id": e.clip_id, "title": e.title or e.clip_id, "reference": e.target,
               "conditions": [{"name": name, "src": src} for name, src in e.versions()]}
              for e in report.examples if e.rated()]
    if not trials:
        return ""
    data = json.dumps({"page_id": report.page_id, "format": RATINGS_FORMAT, "trials": trials}).replace("</", "<\\/")
    return f"""<h2>Rate</h2>
<p>A blind listening test (MUSHRA): for each clip, the reference is the real target instrument
playing it; rate each of the lettered versions 0–100 for how close it is to the reference in
sound. They include the reference itself and a low-passed anchor, and come in an order of their
own for each listener; what each one is shows once you submit. Then export the ratings and run
<code>reinstrument ratings import FILE REPORT_FOLDER</code>.</p>
<div id="rating-form"><label>Your name <input id="listener" maxlength="80"></label>
<button id="start" type="button">Start</button><div id="trials"></div>
<button id="submit" type="button" disabled>Submit</button> <span id="status"></span>
<a id="export" hidden>Export ratings</a></div>
<script id="rating-data" type="application/json">{data}</script>
<script>{FORM_JS}</script>"""


def render(report: Report) -> str:
    kv = lambda d: "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in d.items())  # noqa: E731
    summary = RatingsSummary(**report.ratings) if report.ratings else None
    scores = {r.condition: with_interval(r.mean, r.ci_low, r.ci_high) for r in summary.rows} if summary else None
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(report.title)}</title>
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85rem; }} td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
.players {{ display: flex; flex-wrap: wrap; gap: 0.5rem; }} figure {{ margin: 0; }} figcaption {{ font-size: 0.8rem; }}
.specs {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 0.75rem; margin-top: 0.5rem; }}
.spec img {{ width: 100%; height: auto; display: block; }} .spec figcaption {{ overflow-wrap: anywhere; }}
img {{ max-width: 100%; }} .rec {{ background: #fff3f3; padding: 0.5rem 1rem; border-left: 4px solid crimson; }}
.trial {{ border-top: 1px solid #ddd; padding: 0.5rem 0; }} .cond {{ display: flex; align-items: center; gap: 0.75rem; }}
.cond input[type=range] {{ width: 16rem; }} .revealed {{ color: #555; font-size: 0.8rem; }}
</style></head><body>
<h1>{_e(report.title)}</h1>
{f'<div class="rec"><h2>Recommendation</h2><table>{kv(report.recommendation)}</table></div>' if report.recommendation else ""}
{f'<h2>Trade-off</h2><img alt="JD and FAD against tau_init" src="{_e(report.curves_png)}">' if report.curves_png else ""}
<h2>Listen</h2>{"".join(_example(ex) for ex in report.examples)}
{_form(report)}
<h2>Metrics</h2><p>Mean [95 % interval] per condition.</p>{_table(report.table, scores)}
{_ratings_section(summary) if summary else ""}
<h2>Models</h2><table>{kv(flat(report.models))}</table>
<h2>Parameters</h2><table>{kv(flat(report.params))}</table>
</body></html>
"""
