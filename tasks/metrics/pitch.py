"""Frame-level pitch tracking with Basic Pitch (Bittner et al., ICASSP 2022; Spotify, Apache-2.0):
its `nmp.onnx` run by onnxruntime (no TensorFlow), windowed exactly as
basic_pitch.inference.run_inference does (2 s windows, 30 overlapping frames, half of them
trimmed at each side), so activations match the package's own output.

The "note" posteriorgram has one bin per semitone from A0 (MIDI 21) to C8 (MIDI 108) at
86 frames/s; pitch sets, JD and F1 are taken on that grid (pitch_sets.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import librosa
import numpy as np
import pretty_midi

from tasks.audio import check_audio
from tasks.metrics.pitch_sets import JaccardResult, active_sets, jaccard_distance

SAMPLE_RATE_HZ = 22050
FFT_HOP = 256
FRAMES_PER_S = SAMPLE_RATE_HZ // FFT_HOP      # 86: Basic Pitch's ANNOTATIONS_FPS
WINDOW_SAMPLES = SAMPLE_RATE_HZ * 2 - FFT_HOP  # 43844: AUDIO_N_SAMPLES
OVERLAP_FRAMES = 30
LOWEST_MIDI, N_SEMITONES = 21, 88
DEFAULT_THRESHOLD = 0.3                        # tracked FluidSynth renders' MIDI best (docs/design.md, JD)
ONNX_PATH = os.path.join("basic_pitch", "saved_models", "icassp_2022", "nmp.onnx")


class BasicPitch:
    def __init__(self, weights_dir: str, threads: int | None = None, batch_windows: int = 16):
        import onnxruntime as ort

        path = os.path.join(weights_dir, ONNX_PATH)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Basic Pitch model not found at {path}; run `make setup` (it downloads the "
                                    "hash-pinned basic-pitch 0.4.0 wheel into .weights/) or set REINSTRUMENT_WEIGHTS_DIR")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.batch_windows = batch_windows

    def notes(self, audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        """Mono audio -> note activations [frames, 88] in [0, 1] (frame i at i/86 s)."""
        x = check_audio(audio)
        if sample_rate_hz != SAMPLE_RATE_HZ:  # soxr_hq: what basic_pitch's librosa.load uses
            x = librosa.resample(x, orig_sr=sample_rate_hz, target_sr=SAMPLE_RATE_HZ, res_type="soxr_hq")
        overlap = OVERLAP_FRAMES * FFT_HOP
        hop = WINDOW_SAMPLES - overlap
        padded = np.concatenate([np.zeros(overlap // 2, np.float32), x.astype(np.float32)])
        starts = range(0, len(padded), hop)
        windows = np.zeros((len(starts), WINDOW_SAMPLES, 1), np.float32)
        for i, s in enumerate(starts):
            chunk = padded[s:s + WINDOW_SAMPLES]
            windows[i, :len(chunk), 0] = chunk
        outs = [self.session.run(["StatefulPartitionedCall:1"], {"serving_default_input_2:0": windows[i:i + self.batch_windows]})[0]
                for i in range(0, len(windows), self.batch_windows)]
        note = np.concatenate(outs)[:, OVERLAP_FRAMES // 2:-(OVERLAP_FRAMES // 2)]
        n_frames = int(np.floor(len(x) * FRAMES_PER_S / SAMPLE_RATE_HZ))
        return note.reshape(-1, N_SEMITONES)[:n_frames]


def midi_roll(pm: pretty_midi.PrettyMIDI, n_frames: int) -> np.ndarray:
    """Boolean [frames, 88] of the MIDI's sounding pitches on Basic Pitch's frame grid."""
    roll = np.zeros((n_frames, N_SEMITONES), bool)
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            k = n.pitch - LOWEST_MIDI
            if 0 <= k < N_SEMITONES:
                roll[int(np.ceil(n.start * FRAMES_PER_S)):int(np.ceil(n.end * FRAMES_PER_S)), k] = True
    return roll


@dataclass(frozen=True)
class MidiScore:
    precision: float
    recall: float
    f1: float
    jaccard: float     # JD of the tracked sets against the MIDI's


def score_against_midi(tracked: np.ndarray, roll: np.ndarray) -> MidiScore:
    """Frame-level multi-pitch precision/recall/F1 (mir_eval.multipitch, half-semitone tolerance)
    of tracked pitch sets against the MIDI's, and their JD."""
    import mir_eval

    t = min(len(tracked), len(roll))
    tracked, roll = tracked[:t], roll[:t]
    times = np.arange(t) / FRAMES_PER_S
    hz = librosa.midi_to_hz(np.arange(N_SEMITONES) + LOWEST_MIDI)
    ref = [hz[r] for r in roll]
    est = [hz[e] for e in tracked]
    m = mir_eval.multipitch.evaluate(times, ref, times, est)
    p, r = float(m["Precision"]), float(m["Recall"])
    return MidiScore(p, r, 0.0 if p + r == 0 else 2 * p * r / (p + r), jaccard_distance(tracked, roll).distance)


@dataclass(frozen=True)
class PitchComparison:
    poly: JaccardResult
    melody: JaccardResult
    length_mismatch_s: float


def compare_pitches(a_notes: np.ndarray, b_notes: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                    max_mismatch_s: float = 0.5) -> PitchComparison:
    """JD (polyphonic sets and the monophonic-melody variant) of two activation matrices from
    signals that start together. Their lengths may differ by at most `max_mismatch_s`: more
    means the pair is not an input/output pair and the frame alignment would be meaningless."""
    mismatch = abs(len(a_notes) - len(b_notes)) / FRAMES_PER_S
    if mismatch > max_mismatch_s:
        raise ValueError(f"signals differ in length by {mismatch:.2f} s (> {max_mismatch_s} s); JD compares "
                         "frame by frame and needs two renderings of the same passage")
    poly = jaccard_distance(active_sets(a_notes, threshold), active_sets(b_notes, threshold))
    melody = jaccard_distance(active_sets(a_notes, threshold, monophonic=True),
                              active_sets(b_notes, threshold, monophonic=True))
    return PitchComparison(poly, melody, mismatch)
