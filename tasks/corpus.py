"""The reference corpus: music21 scores (or a user's MIDI folder) rendered per voice, GM
instrument and soundfont, with MIDI guides and degraded guides linked to each clean clip.

Linking: every clip cut from the same MIDI segment shares `source_id` (the segment's content
hash), so a MIDI guide finds each instrument's clean render of it; a degraded guide also
carries `clean_id`, the exact clean clip it was made from."""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pretty_midi

from schemas.configs import CorpusConfig
from tasks import degrade as deg
from tasks.audio import decode_audio_bytes
from tasks.clips import clip_row, is_silent, spans_of
from tasks.ids import content_id
from tasks.midi import (MidiError, count_out_of_range, instrument, midi_bytes, octave_fit,
                        parse_midi, pitched, render, slice_midi, with_program)
from tasks.performance import draw_performance, draw_rendition, perform, room, with_vibrato

VOICE_NAMES = ("soprano", "alto", "tenor", "bass")


@dataclass(frozen=True)
class Piece:
    name: str          # stable identity: corpus-relative path, or the MIDI file's relative path
    voices: dict       # voice name -> MIDI bytes (a Standard MIDI File)


@dataclass
class PieceReport:
    piece: str
    split: str
    rows: list[dict] = field(default_factory=list)
    silent_clips: int = 0
    out_of_range_notes: Counter = field(default_factory=Counter)  # instrument -> notes
    skipped_voices: list[str] = field(default_factory=list)


def assign_splits(pieces: list[str], fractions: tuple[float, float, float]) -> dict[str, str]:
    """Split by piece, never by clip: rank pieces by hash, cut the ranking by the fractions.
    With 3+ pieces each split gets at least one. Same piece set => same assignment."""
    ranked = sorted(pieces, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    n = len(ranked)
    n_valid = max(1 if n >= 3 else 0, int(round(fractions[1] * n)))
    n_test = max(1 if n >= 3 else 0, int(round(fractions[2] * n)))
    n_train = n - n_valid - n_test
    return {p: ("train" if i < n_train else "valid" if i < n_train + n_valid else "test")
            for i, p in enumerate(ranked)}


def _music21_voices(score) -> dict[str, bytes]:
    from music21 import midi as m21midi, stream

    voices: dict[str, bytes] = {}
    for i, part in enumerate(score.parts):
        name = (part.partName or "").strip().lower()
        key = next((v for v in VOICE_NAMES if v in name), f"part{i}")
        voices.setdefault(key, m21midi.translate.streamToMidiFile(part).writestr())
    try:
        full = stream.Score([p for p in score.parts])
    except Exception:  # some ABC tunes share objects across parts; the score itself then serves
        full = score
    voices["mix"] = m21midi.translate.streamToMidiFile(full).writestr()
    return voices


def music21_sources(cfg: CorpusConfig) -> list[tuple[str, str]]:
    """(path, name) of the score files of each collection, `max_pieces` per collection, sorted;
    the name (collection-relative, e.g. 'bach/bwv66.6.mxl') is the piece's identity."""
    from music21 import corpus

    out = []
    for collection in cfg.sources:
        paths = sorted(str(p) for p in corpus.getComposer(collection))
        if not paths:
            raise ValueError(f"music21 corpus has no collection {collection!r}; "
                             "expected e.g. bach, palestrina, monteverdi, beethoven, ryansMammoth, oneills1850")
        root = os.path.dirname(os.path.dirname(paths[0]))
        n = cfg.pieces_per_collection.get(collection, cfg.max_pieces)
        out += [(p, os.path.relpath(p, root)) for p in paths[:n]]
    return out


def music21_pieces(path: str, name: str, max_scores: int | None = None) -> list[Piece]:
    """The pieces of one score file: one, or each score of a collection file (an ABC book is an
    Opus of tunes: 'name#k'), the first `max_scores` of them. A file music21 cannot parse gives
    none (reported, not fatal)."""
    from music21 import corpus

    try:
        parsed = corpus.parse(path)
    except Exception:
        return []
    scores = list(parsed.scores)[:max_scores] if hasattr(parsed, "scores") else [parsed]
    named = [(name, scores[0])] if len(scores) == 1 else [(f"{name}#{k}", sc) for k, sc in enumerate(scores)]
    out = []
    for n, sc in named:
        try:
            if getattr(sc, "parts", None):
                out.append(Piece(n, _music21_voices(sc)))
        except Exception:  # one tune music21 cannot turn into MIDI is skipped, not the book
            continue
    return out


def split_of_tune(name: str, fractions: tuple[float, float, float]) -> str:
    """The split of one tune of a collection file, by its own hash: the tunes of one book are
    different pieces, and a held-out book must give guides and references of other tunes."""
    u = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 2**32
    return "train" if u < fractions[0] else "valid" if u < fractions[0] + fractions[1] else "test"


def midi_folder_pieces(read_bytes: Callable[[str], bytes], names: list[str],
                       max_pieces: int) -> Iterator[Piece]:
    """A user's MIDI files: voice 'mix' is the file; each track is voice 'part<i>'."""
    for name in sorted(names)[:max_pieces]:
        data = read_bytes(name)
        voices = {"mix": data}
        try:
            pm = parse_midi(data)
        except MidiError:
            yield Piece(name, voices)   # build_piece reports it
            continue
        for i, inst in enumerate(x for x in pm.instruments if not x.is_drum and x.notes):
            one = pretty_midi.PrettyMIDI(initial_tempo=120.0)
            one.instruments.append(inst)
            voices[f"part{i}"] = midi_bytes(one)
        yield Piece(name, voices)


def _render_clips(pm: pretty_midi.PrettyMIDI, synth: str, cfg: CorpusConfig, config_hash: str,
                  report: PieceReport, make_meta: Callable[..., dict],
                  post: Callable[[np.ndarray], np.ndarray] | None = None) -> list[dict]:
    sr = cfg.clip.sample_rate_hz
    audio = render(pm, sr, synth)
    if post is not None:
        audio = post(audio)
    rows = []
    for a, b in spans_of(audio.size, cfg.clip):
        seg = audio[a:b]
        if is_silent(seg, cfg.clip):
            report.silent_clips += 1
            continue
        seg_pm = slice_midi(pm, a / sr, b / sr)
        seg_midi = midi_bytes(seg_pm)
        meta = make_meta(seg_pm, seg_midi, a, b)
        rows.append(clip_row(seg, cfg.clip, start_s=a / sr, config_hash=config_hash, midi=seg_midi, **meta))
    return rows


def _segment_id(piece: str, voice: str, a: int, b: int) -> str:
    return content_id("segment", piece, voice, a, b)


def _seed(cfg: CorpusConfig, *parts: object) -> int:
    return int(content_id(cfg.seed, *parts)[:8], 16)


def voice_names(piece: Piece, cfg: CorpusConfig) -> list[str]:
    if cfg.voices == ("parts",):
        return [v for v in piece.voices if v != "mix"]
    return list(cfg.voices)


def renditions(pm: pretty_midi.PrettyMIDI, piece: str, voice: str, cfg: CorpusConfig,
               report: PieceReport) -> list[tuple[str, str, int]]:
    """(instrument, soundfont, octave shift) to render a voice with: the instruments whose range
    it fits (at most `max_out_of_range` of its notes outside, after the octave fit), each with
    every soundfont, or `renders_per_voice` instruments drawn by the voice's hash, each with one
    soundfont drawn the same way."""
    notes = max(1, len(pitched(pm)))
    fits = []
    for name in cfg.instruments:
        inst = instrument(name)
        shift, bad = octave_fit(pm, inst) if cfg.range_policy == "octave_fit" else (0, count_out_of_range(pm, inst))
        if bad / notes > cfg.max_out_of_range:
            report.skipped_voices.append(f"{voice} on {name} ({bad} of {notes} notes out of range)")
            continue
        fits.append((name, shift))
    if cfg.renders_per_voice is None:
        return [(name, sf, shift) for name, shift in fits for sf in cfg.soundfonts]
    fits.sort(key=lambda f: content_id(cfg.seed, piece, voice, f[0]))
    return [(name, cfg.soundfonts[_seed(cfg, piece, voice, name, "soundfont") % len(cfg.soundfonts)], shift)
            for name, shift in fits[:cfg.renders_per_voice]]


def build_piece(piece: Piece, split: str, cfg: CorpusConfig) -> PieceReport:
    """All clips of one piece: clean renders, MIDI guides, degraded guides (those `roles` asks for)."""
    h = cfg.config_hash()
    report = PieceReport(piece.name, split)
    base = dict(piece=piece.name, split=split, source_uri=f"music21:{piece.name}"
                if cfg.midi_dir is None else f"{cfg.midi_dir.rstrip('/')}/{piece.name}")
    for voice in voice_names(piece, cfg):
        if voice not in piece.voices:
            report.skipped_voices.append(voice)
            continue
        try:
            pm = parse_midi(piece.voices[voice])
        except MidiError as e:
            report.skipped_voices.append(f"{voice} ({e})")
            continue
        if cfg.max_voice_s is not None:
            pm = slice_midi(pm, 0.0, cfg.max_voice_s)
        perf = cfg.performance
        if perf is not None:  # one performance of the voice, shared by all its instruments
            pm = perform(pm, draw_performance(perf, _seed(cfg, piece.name, voice, "performance")),
                         _seed(cfg, piece.name, voice, "notes"))
        if "midi_guide" in cfg.roles:
            # MIDI guide: the plain render of the voice as written (no range fitting).
            guide = with_program(pm, 0)
            report.rows += _render_clips(guide, "sine" if cfg.midi_guide_synth == "sine" else "timgm6mb",
                                         cfg, h, report, lambda _pm, m, a, b: dict(
                base, voice=voice, role="midi_guide", domain=f"midi-{cfg.midi_guide_synth}",
                instrument=cfg.midi_guide_synth, source_id=_segment_id(piece.name, voice, a, b),
                clip_id=content_id("midi_guide", piece.name, voice, a, b, m, cfg.midi_guide_synth, h)))
        counted: set[str] = set()
        for inst_name, sf_name, shift in renditions(pm, piece.name, voice, cfg, report):
            inst = instrument(inst_name)
            voiced = with_program(pm, inst.gm_program, shift)
            if inst_name not in counted:  # notes of the voice, once per instrument whatever the soundfonts
                counted.add(inst_name)
                report.out_of_range_notes[inst_name] += count_out_of_range(voiced, inst)
            post = None
            if perf is not None:
                r = draw_rendition(perf, _seed(cfg, piece.name, voice, inst_name, sf_name, "rendition"))
                voiced = with_vibrato(voiced, r)
                post = partial(room, r=r, sample_rate_hz=cfg.clip.sample_rate_hz,
                               seed=_seed(cfg, piece.name, voice, inst_name, sf_name, "room"))
            clean = _render_clips(voiced, sf_name, cfg, h, report, lambda seg, m, a, b: dict(
                base, voice=voice, role="clean", domain=inst_name, instrument=inst_name,
                gm_program=inst.gm_program, soundfont=sf_name, pitch_shift_semitones=0,
                out_of_range_notes=count_out_of_range(seg, inst),
                source_id=_segment_id(piece.name, voice, a, b),
                clip_id=content_id("clean", piece.name, voice, a, b, m, inst_name, sf_name, shift, h)), post)
            report.rows += clean if "clean" in cfg.roles else []
            if "degraded" in cfg.roles:
                report.rows += [_degraded(r, cfg, h) for r in clean]
    return report


def _degraded(clean: dict, cfg: CorpusConfig, config_hash: str) -> dict:
    """One degraded guide per clean clip; the kind rotates deterministically by clip ID."""
    kinds = deg.enabled_kinds(cfg.degrade)
    kind = kinds[int(clean["clip_id"][:8], 16) % len(kinds)]
    x, sr = decode_audio_bytes(clean["audio_flac"])
    seed = int(content_id(cfg.seed, clean["clip_id"])[:8], 16)
    y, desc = deg.degrade(x, kind, cfg.degrade, sr, seed)
    meta = {k: clean[k] for k in ("source_id", "domain", "instrument", "gm_program", "soundfont",
                                  "piece", "voice", "split", "source_uri", "midi", "out_of_range_notes")}
    return clip_row(y, cfg.clip, start_s=clean["start_s"], config_hash=config_hash,
                    clip_id=content_id("degraded", clean["clip_id"], desc), role="degraded",
                    parent_id=clean["clip_id"], clean_id=clean["clip_id"],
                    degradation=json.dumps(desc, sort_keys=True), **meta)


def summarise(rows: list[dict]) -> list[dict]:
    """Pieces, clips and minutes per (role, domain, split)."""
    acc: dict[tuple, dict] = {}
    for r in rows:
        k = (r["role"], r["domain"], r["split"])
        a = acc.setdefault(k, {"role": k[0], "domain": k[1], "split": k[2], "pieces": set(),
                               "clips": 0, "minutes": 0.0})
        a["pieces"].add(r["piece"])
        a["clips"] += 1
        a["minutes"] += r["duration_s"] / 60
    return [dict(v, pieces=len(v["pieces"])) for _, v in sorted(acc.items())]


@dataclass
class CorpusResult:
    pieces_built: int
    pieces_skipped: int
    clips_added: int
    silent_clips_dropped: int
    out_of_range_notes: dict
    summary: list[dict]
    clips_url: str


def _build_source(args: tuple[str, str, str, str]) -> list[PieceReport]:
    """A worker's unit: one music21 score file (parsed here, in the worker: parsing is as slow as
    rendering for large scores), every piece in it."""
    path, name, split, cfg_json = args
    cfg = CorpusConfig.model_validate_json(cfg_json)
    pieces = music21_pieces(path, name, cfg.tunes_per_file)
    return ([build_piece(p, split if p.name == name else split_of_tune(p.name, cfg.split_fractions), cfg)
             for p in pieces] or [PieceReport(name, split, skipped_voices=["(unparsable)"])])


def _build_one(args: tuple[Piece, str, str]) -> list[PieceReport]:
    piece, split, cfg_json = args
    return [build_piece(piece, split, CorpusConfig.model_validate_json(cfg_json))]


def run_corpus(cfg: CorpusConfig, dest_url: str, shard_rows: int = 256, workers: int = 1) -> CorpusResult:
    """Build (or complete) the reference corpus at `dest_url`/clips. Sources (score files, or a
    user's MIDI files) already in the manifest are skipped, so a re-run writes nothing and an
    interrupted run resumes. Splits are by source file: every tune of an ABC book shares one."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from infra.datasets import ShardBuffer, ShardedDataset
    from infra.progress import progress
    from infra.storage import Storage

    dest = Storage(dest_url)
    h = cfg.config_hash()
    buf = ShardBuffer(ShardedDataset(dest.child("clips"), "clips"), h, shard_rows)
    manifest = buf.dataset.manifest()
    prior = manifest.extra.get("corpus_config_hash")
    if prior and prior != h:
        raise ValueError(f"{buf.dataset.url} was built with corpus config {prior}; this config is {h}. "
                         "Use another destination for a different corpus.")
    done = set(manifest.extra.get("pieces", [])) | set(manifest.extra.get("sources", []))
    js = cfg.model_dump_json()
    if cfg.midi_dir:
        src = Storage(cfg.midi_dir)
        names = [f for f in src.find() if f.lower().endswith((".mid", ".midi"))]
        pieces = list(midi_folder_pieces(src.read_bytes, names, cfg.max_pieces))
        splits = assign_splits([p.name for p in pieces], cfg.split_fractions)
        work, fn = [(p, splits[p.name], js) for p in pieces if p.name not in done], _build_one
        source_of = lambda item: item[0].name  # noqa: E731
    else:
        files = music21_sources(cfg)
        splits = assign_splits([n for _, n in files], cfg.split_fractions)
        work, fn = [(p, n, splits[n], js) for p, n in files if n not in done], _build_source
        source_of = lambda item: item[1]  # noqa: E731
    rows_added, silent, oor = 0, 0, Counter()
    built: list[str] = []
    sources: list[str] = []
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) if workers > 1 else _Serial() as ex:
        for item, reps in progress(zip(work, ex.map(fn, work)), len(work), "render corpus"):
            for rep in reps:
                for row in rep.rows:
                    buf.add(row)
                rows_added += len(rep.rows)
                silent += rep.silent_clips
                oor.update(rep.out_of_range_notes)
                built.append(rep.piece)
            sources.append(source_of(item))
    if sources:
        buf.commit({"pieces": sorted(built), "sources": sorted(sources), "corpus_config_hash": h,  # lists merge as unions
                    "corpus_config": cfg.model_dump(mode="json")})
    table = buf.dataset.read([c for c in ("role", "domain", "split", "piece", "duration_s")])
    return CorpusResult(len(built), len(files if not cfg.midi_dir else pieces) - len(work), rows_added, silent, dict(oor),
                        summarise(table.to_pylist()), buf.dataset.url)


class _Serial:
    """The executor interface, in-process (workers=1: simplest to debug and profile)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items):
        return map(fn, items)
