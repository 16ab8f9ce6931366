"""What each job returns: JSON-able summaries, typed (a Prefect flow returns them as they are and
the CLI prints them)."""
from __future__ import annotations

from typing import TypedDict


class TrainResult(TypedDict, total=False):
    run_folder: str
    mlflow_run_id: str
    val_loss: float
    val_split: str
    steps: int
    model_version: str                      # absent with --no-register
    champion: bool | str | None
    selection_score: float                  # the champion rule's score of this version (lower wins)
    previous_champion_score: float | None   # the champion's, scored on the same data now


class TransformResult(TypedDict):
    run_id: str
    run_url: str
    outputs_url: str
    clips_url: str
    selected: int
    skipped: int
    transformed: int
    failed: int
    wall_s: float
    audio_s: float
    realtime_factor: float | None
    first_batch_s: float | None
    steady_realtime_factor: float | None
    mlflow_run_id: str
    outputs: int
    recordings: int                 # sources of the selection that are recordings (files)
    recordings_written: int
    recordings_skipped: int         # already written by an earlier run
    recordings_incomplete: int      # some of their clips were not selected (--limit, a split)
    recordings_failed: int          # a clip failed: a quarantine row names it
    recordings_url: str | None


class SweepResult(TypedDict, total=False):
    """The fields of recommendation.json (schemas/records.Recommendation, as JSON) and the rows of
    the metrics table; the ones callers read are named here."""
    rows: list[dict]
    recommended: dict[str, dict]
    operating_point: dict | None
    sweep_id: str
    mlflow_run_id: str
    report_url: str
    plot_url: str
    metrics_url: str


class NightlyResult(TypedDict):
    runs: list[dict]
    done_commits: int
    new_commits: int


class ShippedModel(TypedDict):
    """A model the repository ships (weights/<folder>/), as registered in the tracking store."""
    folder: str
    name: str           # registry name, e.g. reinstrument-flute-latent
    version: str
    sha256: str         # of weights/<folder>/model.pt
    champion: bool      # whether it holds `champion` (it takes the alias only where none exists)


class CompareResult(TypedDict, total=False):
    """result.json of a comparison (jobs/compare.py)."""
    compare_id: str
    table_url: str              # comparison.parquet: every metrics row of every method, task and subset
    plot_url: str               # FAD against JD, every method, one panel per task
    report_url: str             # the listening page
    mlflow_run_id: str
    finished_at: str
    operating_points: dict[str, dict]  # per task: tau_init, lambda, sampler of warm init and where they came from
    inputs_per_task: dict[str, dict]
    inputs: str                 # the clips dataset compared on
    target: str | None          # the instrument, for a model of several
    summary: list[dict]         # per task, subset and method: "mean [low, high]" per metric
    markdown: dict[str, str]    # per task: the summary as a Markdown table
