"""A listening test's ratings, as the report page's blind form exports them (MUSHRA, ITU-R
BS.1534-3: per trial a known reference, then the conditions in an order shuffled per listener —
every method's output, the reference again, hidden, and a low anchor — each scored 0–100) and
`reinstrument ratings import` reads them back; and their aggregate per condition."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.configs import StrictConfig

RATINGS_FORMAT = "reinstrument.ratings"
HIDDEN_REFERENCE = "reference (hidden)"
ANCHOR = "anchor (3.5 kHz low-pass)"


class Rating(StrictConfig):
    condition: str = Field(..., min_length=1, description="what was rated, revealed only after submitting")
    score: float = Field(..., ge=0, le=100)
    position: int = Field(..., ge=0, description="where the listener heard it (0: first): the shuffled order")


class Trial(StrictConfig):
    clip_id: str = Field(..., min_length=1)
    ratings: tuple[Rating, ...] = Field(..., min_length=2)

    @model_validator(mode="after")
    def _mushra(self) -> "Trial":
        names = [r.condition for r in self.ratings]
        if len(set(names)) != len(names):
            raise ValueError(f"trial {self.clip_id}: a condition rated twice ({names})")
        if HIDDEN_REFERENCE not in names or ANCHOR not in names:
            raise ValueError(f"trial {self.clip_id}: a MUSHRA trial rates the hidden reference and the anchor too; "
                             f"got {names}")
        if sorted(r.position for r in self.ratings) != list(range(len(names))):
            raise ValueError(f"trial {self.clip_id}: positions must be 0..{len(names) - 1}, one each")
        return self


class RatingsFile(StrictConfig):
    format: Literal["reinstrument.ratings"] = RATINGS_FORMAT
    version: Literal[1] = 1
    page_id: str = Field(..., min_length=1, description="the page the form was on (its report.json's page_id)")
    listener: str = Field(..., min_length=1, max_length=80)
    submitted_at: str
    trials: tuple[Trial, ...] = Field(..., min_length=1)


class RatingRow(StrictConfig):
    """One condition's scores over every kept listener and trial: mean and the 95 % interval
    (Student's t over the scores, as BS.1534-3 reports them)."""
    condition: str
    scores: int
    listeners: int
    mean: float
    ci_low: float | None
    ci_high: float | None


class RatingsSummary(StrictConfig):
    rows: tuple[RatingRow, ...]
    listeners: int                          # kept
    excluded: tuple[str, ...] = ()          # listeners post-screening removed, with the reason
    files: int = 0
