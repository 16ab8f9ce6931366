"""Listening-test ratings (MUSHRA, ITU-R BS.1534-3): the low anchor a trial plays, the check of
a ratings file against the page it came from, post-screening and the aggregate per condition."""
from __future__ import annotations

import numpy as np
from scipy import stats

from schemas.ratings import ANCHOR, HIDDEN_REFERENCE, RatingRow, RatingsFile, RatingsSummary

ANCHOR_CUTOFF_HZ = 3500.0   # BS.1534-3's mandatory low anchor: the reference low-passed at 3.5 kHz
# Post-screening (BS.1534-3, 4.1.2): a listener who scores the hidden reference below 90 in more
# than 15 % of the trials did not hear it as the reference; their scores are left out.
REFERENCE_FLOOR, REFERENCE_MISS_RATE = 90.0, 0.15


def anchor_audio(audio: np.ndarray, sample_rate_hz: int, cutoff_hz: float = ANCHOR_CUTOFF_HZ) -> np.ndarray:
    """The reference low-passed at `cutoff_hz`: every FFT bin above it zeroed (a brick wall, so the
    anchor's bandwidth is exactly the standard's)."""
    x = np.asarray(audio, dtype=np.float64)
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1.0 / sample_rate_hz) > cutoff_hz] = 0
    return np.fft.irfft(spec, n=len(x)).astype(np.float32)


def check_against_page(ratings: RatingsFile, page_id: str, conditions: dict[str, list[str]]) -> None:
    """Refuse ratings made on another page, or of a clip or condition the page did not offer
    (`conditions[clip_id]` lists what the page's form played for that clip)."""
    if ratings.page_id != page_id:
        raise ValueError(f"these ratings were made on page {ratings.page_id!r}, not on this report ({page_id!r}); "
                         "import them into the report whose form exported them")
    for trial in ratings.trials:
        offered = conditions.get(trial.clip_id)
        if offered is None:
            raise ValueError(f"ratings of clip {trial.clip_id!r}, which this report's form does not play "
                             f"(it plays {sorted(conditions)})")
        unknown = sorted({r.condition for r in trial.ratings} - set(offered))
        if unknown:
            raise ValueError(f"clip {trial.clip_id}: conditions {unknown} are not on this report's form "
                             f"(expected some of {sorted(offered)})")


def latest_per_listener(files: list[RatingsFile]) -> list[RatingsFile]:
    """One file per listener: a listener who submitted again replaced their earlier ratings."""
    latest: dict[str, RatingsFile] = {}
    for f in sorted(files, key=lambda f: f.submitted_at):
        latest[f.listener] = f
    return [latest[k] for k in sorted(latest)]


def screened(files: list[RatingsFile]) -> tuple[list[RatingsFile], list[str]]:
    kept, excluded = [], []
    for f in files:
        ref = [r.score for t in f.trials for r in t.ratings if r.condition == HIDDEN_REFERENCE]
        missed = sum(s < REFERENCE_FLOOR for s in ref)
        if ref and missed / len(ref) > REFERENCE_MISS_RATE:
            excluded.append(f"{f.listener}: hidden reference below {REFERENCE_FLOOR:g} in {missed} of {len(ref)} trials")
        else:
            kept.append(f)
    return kept, excluded


def _interval(scores: np.ndarray) -> tuple[float | None, float | None]:
    if len(scores) < 2:
        return None, None
    half = float(stats.t.ppf(0.975, len(scores) - 1) * scores.std(ddof=1) / np.sqrt(len(scores)))
    return float(scores.mean()) - half, float(scores.mean()) + half


def summarise(files: list[RatingsFile], order: list[str] | None = None) -> RatingsSummary:
    """Per condition, over every kept listener's trials: the mean score and its 95 % interval.
    Rows follow `order` (the page's), then the hidden reference and the anchor."""
    everyone = latest_per_listener(files)
    kept, excluded = screened(everyone)
    scores: dict[str, list[float]] = {}
    who: dict[str, set[str]] = {}
    for f in kept:
        for t in f.trials:
            for r in t.ratings:
                scores.setdefault(r.condition, []).append(r.score)
                who.setdefault(r.condition, set()).add(f.listener)
    first = [c for c in (order or []) if c in scores and c not in (HIDDEN_REFERENCE, ANCHOR)]
    names = first + sorted(c for c in scores if c not in first and c not in (HIDDEN_REFERENCE, ANCHOR))
    names += [c for c in (HIDDEN_REFERENCE, ANCHOR) if c in scores]
    rows = []
    for c in names:
        s = np.asarray(scores[c], dtype=np.float64)
        lo, hi = _interval(s)
        rows.append(RatingRow(condition=c, scores=len(s), listeners=len(who[c]), mean=float(s.mean()), ci_low=lo,
                              ci_high=hi))
    return RatingsSummary(rows=tuple(rows), listeners=len(kept), excluded=tuple(excluded), files=len(files))
