"""Listening-test arithmetic and the page's readable tables: the anchor's band limit, MUSHRA
post-screening, the t interval, one file per listener; pivoted metrics, values without reprs."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from schemas.ratings import ANCHOR, HIDDEN_REFERENCE, RatingsFile
from tasks.ratings import anchor_audio, summarise
from tasks.report import Example, Report, pivot, show


def _file(listener: str, scores: dict[str, list[float]], at: str = "2026-12-07T10:00:00Z") -> RatingsFile:
    n = len(next(iter(scores.values())))
    trials = [{"clip_id": f"c{t}", "ratings": [{"condition": c, "score": s[t], "position": k}
                                               for k, (c, s) in enumerate(scores.items())]} for t in range(n)]
    return RatingsFile(page_id="p", listener=listener, submitted_at=at, trials=trials)


def test_the_anchor_is_the_reference_without_anything_above_3_5_khz():
    sr = 16000
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 6000 * t)
    y = anchor_audio(x, sr)
    spec = np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(len(y), 1 / sr)
    assert spec[f > 3500].max() < 1e-3 * spec.max()
    assert np.allclose(y, np.sin(2 * np.pi * 1000 * t), atol=1e-4)  # what is below passes untouched


def test_aggregate_is_the_mean_and_t_interval_over_kept_listeners():
    a = _file("ana", {"warm": [60, 70], HIDDEN_REFERENCE: [100, 95], ANCHOR: [10, 20]})
    b = _file("bo", {"warm": [80, 90], HIDDEN_REFERENCE: [92, 100], ANCHOR: [15, 5]})
    # misses the hidden reference in both trials (> 15 %): left out, as BS.1534-3 screens
    c = _file("cy", {"warm": [0, 0], HIDDEN_REFERENCE: [50, 60], ANCHOR: [90, 90]})
    s = summarise([a, b, c], order=["warm"])
    assert s.listeners == 2 and len(s.excluded) == 1 and s.excluded[0].startswith("cy:")
    assert [r.condition for r in s.rows] == ["warm", HIDDEN_REFERENCE, ANCHOR]
    warm = s.rows[0]
    scores = np.array([60, 70, 80, 90.0])
    half = stats.t.ppf(0.975, 3) * scores.std(ddof=1) / 2
    assert (warm.mean, warm.scores, warm.listeners) == (75.0, 4, 2)
    assert warm.ci_low == pytest.approx(75 - half) and warm.ci_high == pytest.approx(75 + half)


def test_a_listener_who_submits_again_replaces_their_ratings():
    first = _file("ana", {"warm": [10], HIDDEN_REFERENCE: [100], ANCHOR: [0]}, "2026-12-07T10:00:00Z")
    again = _file("ana", {"warm": [90], HIDDEN_REFERENCE: [100], ANCHOR: [0]}, "2026-12-07T11:00:00Z")
    s = summarise([again, first])
    assert s.listeners == 1 and s.rows[0].mean == 90 and s.rows[0].ci_low is None


def test_a_trial_without_the_hidden_reference_or_with_a_bad_order_is_refused():
    with pytest.raises(ValueError, match="hidden reference and the anchor"):
        _file("x", {"warm": [50], ANCHOR: [0]})
    with pytest.raises(ValueError, match="positions"):
        RatingsFile(page_id="p", listener="x", submitted_at="t", trials=[{"clip_id": "c", "ratings": [
            {"condition": "w", "score": 1, "position": 0}, {"condition": HIDDEN_REFERENCE, "score": 1, "position": 0},
            {"condition": ANCHOR, "score": 1, "position": 2}]}])
    with pytest.raises(ValueError):
        _file("x", {"warm": [101], HIDDEN_REFERENCE: [100], ANCHOR: [0]})


def test_metrics_pivot_to_one_row_per_condition_with_intervals():
    rows = [{"method": "warm_init", "t_init": 0.6, "metric": m, "reference": ref, "mean": v, "ci_low": lo, "ci_high": hi}
            for m, ref, v, lo, hi in (("jd", "guide", 0.1, 0.09, 0.11), ("fad", "real", 20.0, 18.0, 22.0),
                                      ("fad", "vocoded", 25.0, None, None))]
    (row,) = pivot(rows, lambda r: f"τ {r['t_init']:g}")
    assert row == {"condition": "τ 0.6", "jd": "0.1 [0.09, 0.11]", "fad (real)": "20 [18, 22]", "fad (vocoded)": "25"}
    assert pivot([{"date": "d", "failed": None, "targets": ()}]) == [{"date": "d", "failed": "–", "targets": "–"}]
    assert show({"name": "heun", "S_tmax": float("inf"), "x": None}) == "name heun, S_tmax ∞"


def test_a_page_round_trips_through_its_data_file():
    ex = Example("c1", "audio/g.flac", [("τ 0.6", "audio/o.flac")], [("guide", "spec/g.png")], "audio/t.flac",
                 "piece", "audio/a.flac", group="timbre")
    r = Report("t", {}, {}, {}, None, [], [ex], page_id="p")
    back = Report.from_json(r.to_json())
    assert back == r and back.conditions() == {"c1": ["timbre · τ 0.6", HIDDEN_REFERENCE, ANCHOR]}
