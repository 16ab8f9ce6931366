"""Listening examples for the static reports (tasks/report.py): copy an input's guide, its
outputs and (when known) its true target next to the page, and draw their log-mel
spectrograms side by side, and build the page (`write_page`, for sweeps and nightly runs alike).
Paths in the returned `Example` are relative to the report folder."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from infra.storage import Storage
from schemas.configs import MelConfig
from tasks.audio import decode_audio_bytes, encode_flac
from tasks.features import LogMel
from tasks.plots import spectrogram_panels_png
from tasks.ratings import anchor_audio
from tasks.report import Example, Report, pivot, render


def clip_title(row: dict) -> str | None:
    """What a listener calls a clip: its piece (or file), voice and span, e.g.
    'oneills1850/0001-0050.abc#3 · part0 · 9-19 s'; None when the row knows no piece."""
    if not row.get("piece"):
        return None
    span = (f"{row['start_s']:.0f}–{row['start_s'] + row['duration_s']:.0f} s"
            if row.get("start_s") is not None and row.get("duration_s") is not None else None)
    return " · ".join(str(x) for x in (row["piece"], row.get("voice"), span) if x)


def write_example(report: Storage, clip_id: str, guide: tuple[np.ndarray, int], outputs: list[tuple[str, bytes, bool]],
                  target: tuple[np.ndarray, int] | None = None, mel: MelConfig = MelConfig(),
                  title: str | None = None, group: str | None = None) -> Example:
    """outputs: (label, FLAC bytes, draw its spectrogram). Files land under report/audio and
    report/spec (one PNG per panel); with a true target, also the rating form's low anchor."""
    front = LogMel(mel)
    stem = clip_id[:16]

    def logmel(audio: np.ndarray) -> np.ndarray:
        return front(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None])[0].numpy()

    report.write_bytes(f"audio/{stem}-guide.flac", encode_flac(*guide))
    mels, titles, players = [logmel(guide[0])], ["guide (input)"], []
    for k, (label, flac, draw) in enumerate(outputs):
        rel = f"audio/{stem}-{k:02d}.flac"
        report.write_bytes(rel, flac)
        players.append((label, rel))
        if draw:
            mels.append(logmel(decode_audio_bytes(flac)[0]))
            titles.append(label)
    target_rel = anchor_rel = None
    if target is not None:
        target_rel, anchor_rel = f"audio/{stem}-target.flac", f"audio/{stem}-anchor.flac"
        report.write_bytes(target_rel, encode_flac(*target))
        report.write_bytes(anchor_rel, encode_flac(anchor_audio(target[0], target[1]), target[1]))
        mels.append(logmel(target[0]))
        titles.append("true target")
    n = min(m.shape[1] for m in mels)  # outputs keep their guide's length to a frame; align the panels
    panels = spectrogram_panels_png([m[:, :n] for m in mels], frame_rate_hz=mel.sample_rate_hz / mel.hop_length_samples,
                                    f_max_hz=mel.f_max_hz)
    specs = []
    for k, (label, png) in enumerate(zip(titles, panels)):
        report.write_bytes(f"spec/{stem}-{k:02d}.png", png)
        specs.append((label, f"spec/{stem}-{k:02d}.png"))
    return Example(clip_id, f"audio/{stem}-guide.flac", players, specs, target_rel, title, anchor_rel, group)


@dataclass
class ListeningInput:
    """One input of a listening page: its guide, each method's or grid point's output as
    (label, FLAC bytes, draw its spectrogram), and the true target where known."""
    clip_id: str
    guide: tuple[np.ndarray, int]
    outputs: list[tuple[str, bytes, bool]]
    target: tuple[np.ndarray, int] | None = None
    title: str | None = None        # what the page calls it (a recording's file, a clip's piece and span)
    group: str | None = None        # e.g. a comparison's task: rated conditions are named "group · label"


REPORT_DATA = "report.json"


def write_page(report: Storage, title: str, params: dict, models: dict, recommendation: dict, table: list[dict],
               inputs: list[ListeningInput], curves_png: bytes | None = None,
               condition_of: Callable[[dict], str] | None = None, mlflow_run_id: str | None = None) -> str:
    """The one report builder (sweep, comparison, nightly): examples, curves and page into
    `report`, its data beside it (report.json, for `reinstrument ratings import`); its URI.
    `condition_of` names a long-form metric row's condition (a grid point, a method), as the
    outputs' labels do, so that ratings land on the same row as FAD and JD."""
    examples = [write_example(report, x.clip_id, x.guide, x.outputs, x.target, title=x.title, group=x.group)
                for x in inputs]
    if curves_png is not None:
        report.write_bytes("tradeoff.png", curves_png)
    page_id = hashlib.sha256(f"{report.url}|{title}".encode()).hexdigest()[:16]
    data = Report(title, params, models, recommendation, "tradeoff.png" if curves_png is not None else None,
                  pivot(table, condition_of), examples, page_id=page_id, mlflow_run_id=mlflow_run_id)
    report.write_bytes(REPORT_DATA, data.to_json().encode())
    report.write_bytes("report.html", render(data).encode())
    return report.uri("report.html")
