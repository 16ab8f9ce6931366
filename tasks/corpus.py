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

import pretty_midi

from schemas.configs import CorpusConfig
from tasks import degrade as deg
from tasks.audio import decode_audio_bytes
from tasks.clips import clip_row, is_silent, spans_of
from tasks.ids import content_id
from tasks.midi import (MidiError, count_out_of_range, instrument, midi_bytes, octave_fit,
                        parse_midi, render, slice_midi, with_program)

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
    full = stream.Score([p for p in score.parts])
    voices["mix"] = m21midi.translate.streamToMidiFile(full).writestr()
    return voices


def music21_pieces(collection: str, max_pieces: int) -> Iterator[Piece]:
    from music21 import corpus

    paths = sorted(str(p) for p in corpus.getComposer(collection))
    if not paths:
        raise ValueError(f"music21 corpus has no collection {collection!r}; "
                         "expected e.g. bach, palestrina, monteverdi, beethoven")
    root = os.path.dirname(os.path.dirname(paths[0]))
    count = 0
    for path in paths:
        if count >= max_pieces:
            return
        try:
            score = corpus.parse(path)
        except Exception:  # a score music21 itself cannot parse is skipped, not fatal
            continue
        if not getattr(score, "parts", None):
            continue
        count += 1
        yield Piece(os.path.relpath(path, root), _music21_voices(score))


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
                  report: PieceReport, make_meta: Callable[..., dict]) -> list[dict]:
    sr = cfg.clip.sample_rate_hz
    audio = render(pm, sr, synth)
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


def build_piece(piece: Piece, split: str, cfg: CorpusConfig) -> PieceReport:
    """All clips of one piece: clean renders, MIDI guides, degraded guides."""
    h = cfg.config_hash()
    report = PieceReport(piece.name, split)
    base = dict(piece=piece.name, split=split, source_uri=f"music21:{piece.name}"
                if cfg.midi_dir is None else f"{cfg.midi_dir.rstrip('/')}/{piece.name}")
    for voice in cfg.voices:
        if voice not in piece.voices:
            report.skipped_voices.append(voice)
            continue
        try:
            pm = parse_midi(piece.voices[voice])
        except MidiError as e:
            report.skipped_voices.append(f"{voice} ({e})")
            continue
        # MIDI guide: the plain render of the voice as written (no range fitting).
        guide = with_program(pm, 0)
        report.rows += _render_clips(guide, "sine" if cfg.midi_guide_synth == "sine" else "timgm6mb",
                                     cfg, h, report, lambda _pm, m, a, b: dict(
            base, voice=voice, role="midi_guide", domain=f"midi-{cfg.midi_guide_synth}",
            instrument=cfg.midi_guide_synth, source_id=_segment_id(piece.name, voice, a, b),
            clip_id=content_id("midi_guide", piece.name, voice, a, b, m, cfg.midi_guide_synth, h)))
        for inst_name in cfg.instruments:
            inst = instrument(inst_name)
            shift = octave_fit(pm, inst)[0] if cfg.range_policy == "octave_fit" else 0
            voiced = with_program(pm, inst.gm_program, shift)
            report.out_of_range_notes[inst_name] += count_out_of_range(voiced, inst)
            for sf_name in cfg.soundfonts:
                clean = _render_clips(voiced, sf_name, cfg, h, report, lambda seg, m, a, b: dict(
                    base, voice=voice, role="clean", domain=inst_name, instrument=inst_name,
                    gm_program=inst.gm_program, soundfont=sf_name, pitch_shift_semitones=0,
                    out_of_range_notes=count_out_of_range(seg, inst),
                    source_id=_segment_id(piece.name, voice, a, b),
                    clip_id=content_id("clean", piece.name, voice, a, b, m, inst_name, sf_name, shift, h)))
                report.rows += clean
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


def _build_one(args: tuple[Piece, str, str]) -> PieceReport:
    piece, split, cfg_json = args
    return build_piece(piece, split, CorpusConfig.model_validate_json(cfg_json))


def run_corpus(cfg: CorpusConfig, dest_url: str, shard_rows: int = 256, workers: int = 1) -> CorpusResult:
    """Build (or complete) the reference corpus at `dest_url`/clips. Pieces already in the
    manifest are skipped, so a re-run writes nothing and an interrupted run resumes."""
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
    done = set(manifest.extra.get("pieces", []))
    if cfg.midi_dir:
        src = Storage(cfg.midi_dir)
        names = [f for f in src.find() if f.lower().endswith((".mid", ".midi"))]
        pieces = list(midi_folder_pieces(src.read_bytes, names, cfg.max_pieces))
    else:
        pieces = list(progress(music21_pieces(cfg.collection, cfg.max_pieces), cfg.max_pieces, "parse scores"))
    splits = assign_splits([p.name for p in pieces], cfg.split_fractions)
    todo = [(p, splits[p.name], cfg.model_dump_json()) for p in pieces if p.name not in done]
    rows_added, silent, oor = 0, 0, Counter()
    built: list[str] = []
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) if workers > 1 else _Serial() as ex:
        for rep in progress(ex.map(_build_one, todo), len(todo), "render corpus"):
            for row in rep.rows:
                buf.add(row)
            rows_added += len(rep.rows)
            silent += rep.silent_clips
            oor.update(rep.out_of_range_notes)
            built.append(rep.piece)
    if built:
        buf.commit({"pieces": sorted(built), "corpus_config_hash": h,  # lists merge as unions
                    "corpus_config": cfg.model_dump(mode="json")})
    table = buf.dataset.read([c for c in ("role", "domain", "split", "piece", "duration_s")])
    return CorpusResult(len(built), len(pieces) - len(built), rows_added, silent, dict(oor),
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
