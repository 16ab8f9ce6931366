"""Reference corpus: determinism, splits by piece, guides linked to their clean clips."""
import io
import os

import numpy as np
import pretty_midi

from infra.datasets import ShardedDataset
from tasks.audio import decode_audio_bytes
from tasks.corpus import assign_splits, run_corpus


def _clips(root):
    return ShardedDataset.at(f"{root}/clips", "clips").read().to_pylist()


def test_corpus_has_every_role_and_instrument(built_corpus):
    root, res = built_corpus
    rows = _clips(root)
    assert {r["role"] for r in rows} == {"clean", "midi_guide", "degraded"}
    assert {r["domain"] for r in rows if r["role"] == "clean"} == {"flute", "violin"}
    assert res.pieces_built == 3 and res.clips_added == len(rows)
    for r in rows[:20]:
        x, sr = decode_audio_bytes(r["audio_flac"])
        assert sr == 16000 and x.size == r["num_samples"] and np.abs(x).max() > 0.01


def test_splits_are_by_piece_never_by_clip(built_corpus):
    rows = _clips(built_corpus[0])
    by_piece = {}
    for r in rows:
        by_piece.setdefault(r["piece"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_piece.values())
    assert sorted(s.pop() for s in by_piece.values()) == ["test", "train", "valid"]
    assert assign_splits(["a", "b", "c", "d"], (0.5, 0.25, 0.25)) == assign_splits(["d", "c", "b", "a"], (0.5, 0.25, 0.25))


def test_guides_link_to_clean_clips(built_corpus):
    rows = _clips(built_corpus[0])
    clean = {r["clip_id"]: r for r in rows if r["role"] == "clean"}
    clean_sources = {r["source_id"] for r in clean.values()}
    degraded = [r for r in rows if r["role"] == "degraded"]
    assert len(degraded) == len(clean)
    for d in degraded:
        c = clean[d["clean_id"]]
        assert (d["source_id"], d["start_s"], d["domain"]) == (c["source_id"], c["start_s"], c["domain"])
        assert d["degradation"]
    guides = [r for r in rows if r["role"] == "midi_guide"]
    assert guides and all(g["source_id"] in clean_sources for g in guides)


def test_clip_midi_matches_the_instrument_range_policy(built_corpus):
    rows = [r for r in _clips(built_corpus[0]) if r["role"] == "clean" and r["domain"] == "flute"]
    pitches = [n.pitch for r in rows for i in pretty_midi.PrettyMIDI(io.BytesIO(r["midi"])).instruments
               for n in i.notes]
    low, high = 60, 96
    outside = sum(1 for p in pitches if not low <= p <= high)
    assert outside == sum(r["out_of_range_notes"] for r in rows)
    assert outside / len(pitches) < 0.05  # octave_fit put the soprano line into the flute's range


def test_rebuild_is_deterministic_and_a_noop(built_corpus, tiny_corpus_cfg, tmp_path):
    root, _ = built_corpus
    before = sorted(r["clip_id"] for r in _clips(root))
    again = run_corpus(tiny_corpus_cfg, str(tmp_path), workers=1)
    assert sorted(r["clip_id"] for r in _clips(tmp_path)) == before  # same arguments => same IDs
    commits = sorted(os.listdir(root / "clips/_commits"))
    res = run_corpus(tiny_corpus_cfg, str(root), workers=1)
    assert res.pieces_built == 0 and res.pieces_skipped == 3 and res.clips_added == 0
    assert sorted(os.listdir(root / "clips/_commits")) == commits  # a no-op re-run commits nothing
    assert again.summary == res.summary


def test_broad_corpus_performance_is_shared_by_a_voice_and_tunes_split_apart(tmp_path):
    """Several collections, every part, a drawn subset of instruments per voice, performance
    variation. The performance (tempo, dynamics, articulation) belongs to the voice, so every
    instrument that plays a segment plays the same notes at the same times: the true target of a
    guide stays aligned with it. The tunes of an ABC book get splits of their own."""
    from schemas.configs import CorpusConfig, PerformanceConfig
    from tasks.midi import parse_midi

    cfg = CorpusConfig(collections=("bach", "oneills1850"), max_pieces=1, tunes_per_file=6,
                       instruments=("flute", "violin", "cello"), soundfonts=("fluidr3", "timgm6mb"), voices=("parts",),
                       max_out_of_range=0.05, renders_per_voice=2, max_voice_s=12, performance=PerformanceConfig(),
                       roles=("clean", "midi_guide"), clip={"clip_s": 6.0, "overlap_s": 0.0})
    res = run_corpus(cfg, str(tmp_path), workers=1)
    rows = _clips(tmp_path)
    assert {r["role"] for r in rows} == {"clean", "midi_guide"} and res.clips_added == len(rows)
    tunes = {r["piece"] for r in rows if r["piece"].startswith("oneills1850/")}
    assert len(tunes) >= 4 and all("#" in t for t in tunes)
    assert len({r["split"] for r in rows if r["piece"] in tunes}) >= 2  # split per tune, not per book
    by_voice: dict = {}
    for r in rows:
        if r["role"] == "clean":
            by_voice.setdefault((r["piece"], r["voice"]), set()).add((r["instrument"], r["soundfont"]))
    assert by_voice and all(len({i for i, _ in v}) <= 2 for v in by_voice.values())  # renders_per_voice
    assert any(len({i for i, _ in v}) == 2 for v in by_voice.values())
    onsets: dict = {}
    for r in rows:
        if r["role"] == "clean":
            notes = sorted((round(n.start, 3), round(n.end, 3)) for i in parse_midi(r["midi"]).instruments for n in i.notes)
            onsets.setdefault(r["source_id"], set()).add(tuple(notes))
    shared = [v for v in onsets.values()]
    assert shared and all(len(v) == 1 for v in shared)  # one timing per segment, whatever the instrument
    assert cfg.config_hash() != CorpusConfig().config_hash()
    assert CorpusConfig().config_hash() == "85268d2d4b44"  # unchanged for corpora built before these fields
    # a re-run finds every source done and writes nothing
    assert run_corpus(cfg, str(tmp_path), workers=1).clips_added == 0
