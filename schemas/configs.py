"""Typed run configs. Every config rejects unknown keys (a misspelled key is an error, not a
silent default) and is frozen, so its hash identifies the work it describes."""
from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SOUNDFONTS: dict[str, str] = {
    # name -> path installed by Debian's packages (see Makefile APT_PACKAGES).
    "fluidr3": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "timgm6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "musescore": "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
    "musescore-hq": "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
    # csound's GM bank (package csound-soundfont): samples of its own, unrelated to the Fluid and
    # MuseScore families, so it is the soundfont the general models keep out of training
    "gmbank": "/usr/share/sounds/sf2/sf_GMbank.sf2",
}


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def config_hash(self) -> str:
        """Short content hash of the canonical JSON of this config (identity, not logistics)."""
        return config_hash(self.model_dump(mode="json"))


def config_hash(obj: object) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class ClipConfig(StrictConfig):
    """How sources become clips: rate, clip length, loudness."""

    sample_rate_hz: int = Field(16000, ge=4000, le=192000)
    clip_s: float = Field(10.0, gt=0.5, le=600)
    overlap_s: float = Field(1.0, ge=0)
    min_clip_s: float = Field(1.0, gt=0, description="shorter sources are quarantined")
    target_lufs: float = Field(-23.0, le=0, description="ITU-R BS.1770 integrated loudness")
    peak_ceiling_dbfs: float = Field(-1.0, le=0)
    silence_dbfs: float = Field(-70.0, description="a clip whose peak is below this is silent")
    min_audible_fraction: float = Field(0.02, ge=0, le=1, description="a clip is inaudible unless this fraction "
                                        "of it is covered by sounds of >= 100 ms above silence_dbfs in the 30 Hz-7.5 kHz band")

    @model_validator(mode="after")
    def _overlap_below_clip(self) -> "ClipConfig":
        if self.overlap_s >= self.clip_s:
            raise ValueError(f"overlap_s={self.overlap_s} must be < clip_s={self.clip_s}")
        return self


class DegradeConfig(StrictConfig):
    """Degradations for enhancement guides; each one makes its own guide clip."""

    snr_db: float | None = Field(10.0, description="additive white noise at this SNR")
    lowpass_hz: float | None = Field(3000.0, gt=0)
    clip_gain_db: float | None = Field(12.0, ge=0, description="gain before hard clipping at ±1")
    reverb_rt60_s: float | None = Field(0.8, gt=0)


Role = Literal["clean", "midi_guide", "degraded"]
RangePolicy = Literal["octave_fit", "keep"]
Span = tuple[float, float]


class PerformanceConfig(StrictConfig):
    """How a rendered voice varies like a recording does (tasks/performance.py): tempo, dynamics
    and articulation per voice (shared by its instruments), vibrato and room per rendition."""

    tempo_scale: Span = Field((0.85, 1.2), description="time stretch range (> 1 slower)")
    velocity: tuple[int, int] = Field((55, 110), description="base MIDI velocity range of a voice")
    swell_db: float = Field(8.0, ge=0, description="largest peak-to-peak slow dynamic swell")
    legato: Span = Field((0.55, 1.0), description="sounding share of each written note")
    vibrato_cc: tuple[int, int] = Field((0, 90), description="mod wheel (CC1) range: vibrato depth")
    room_rt60_s: Span = Field((0.2, 1.2), description="reverberation time range of the room")
    room_wet: Span = Field((0.05, 0.35))
    dry_share: float = Field(0.25, ge=0, le=1, description="share of renditions without a room")

    @model_validator(mode="after")
    def _ordered(self) -> "PerformanceConfig":
        for name in ("tempo_scale", "velocity", "legato", "vibrato_cc", "room_rt60_s", "room_wet"):
            lo, hi = getattr(self, name)
            if not 0 < hi or lo > hi or lo < 0:
                raise ValueError(f"{name}={(lo, hi)}: expected 0 <= low <= high, high > 0")
        if self.velocity[1] > 127 or self.vibrato_cc[1] > 127:
            raise ValueError("velocity and vibrato_cc are MIDI values: at most 127")
        return self


class CorpusConfig(StrictConfig):
    """The reference corpus: which scores, rendered how."""

    collection: str = Field("bach", description="music21 corpus composer/collection name")
    collections: tuple[str, ...] = Field((), description="several music21 collections (replaces collection); "
                                         "max_pieces then counts score files per collection")
    midi_dir: str | None = Field(None, description="a user's MIDI folder instead of music21")
    max_pieces: int = Field(16, ge=1)
    pieces_per_collection: dict[str, int] = Field(default_factory=dict, description="max_pieces of named collections")
    tunes_per_file: int | None = Field(None, ge=1, description="at most this many scores of a collection file "
                                       "(an ABC book); None: all")
    instruments: tuple[str, ...] = ("flute", "violin")
    soundfonts: tuple[str, ...] = ("fluidr3",)
    voices: tuple[str, ...] = Field(("soprano", "mix"), description="voice names; 'parts' = every part of the score")
    range_policy: RangePolicy = "octave_fit"
    max_out_of_range: float = Field(1.0, ge=0, le=1, description="an instrument skips a voice with a larger "
                                    "share of notes outside its range (after the octave fit)")
    renders_per_voice: int | None = Field(None, ge=1, description="(instrument, soundfont) pairs drawn per voice "
                                          "among those that fit (by the voice's hash); None: all of them")
    max_voice_s: float | None = Field(None, gt=0, description="each voice is cut to this length (as written)")
    performance: PerformanceConfig | None = Field(None, description="performance variation; None: as written, dry")
    roles: tuple[Role, ...] = Field(("clean", "midi_guide", "degraded"), description="which clips to make")
    midi_guide_synth: Literal["sine", "timgm6mb"] = "sine"
    degrade: DegradeConfig = DegradeConfig()
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    clip: ClipConfig = ClipConfig()
    seed: int = 0

    def config_hash(self) -> str:
        """Fields added for the broad corpus are left out while at their defaults, so a corpus
        built before they existed keeps its hash (its clip IDs, and every seeded draw over them)."""
        d = self.model_dump(mode="json")
        for name, default in (("collections", []), ("pieces_per_collection", {}), ("tunes_per_file", None),
                              ("max_out_of_range", 1.0), ("renders_per_voice", None),
                              ("max_voice_s", None), ("performance", None),
                              ("roles", ["clean", "midi_guide", "degraded"])):
            if d[name] == default:
                del d[name]
        return config_hash(d)

    @property
    def sources(self) -> tuple[str, ...]:
        """The music21 collections this corpus reads."""
        return self.collections or (self.collection,)

    @field_validator("soundfonts")
    @classmethod
    def _known_soundfonts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if s not in SOUNDFONTS]
        if bad:
            raise ValueError(f"unknown soundfont(s) {bad}; expected some of {sorted(SOUNDFONTS)}")
        return v

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(v) - 1.0) > 1e-6 or min(v) < 0:
            raise ValueError(f"split_fractions {v} must be non-negative and sum to 1")
        return v


class IngestConfig(StrictConfig):
    """Ingestion of a user's folder or S3 prefix."""

    clip: ClipConfig = ClipConfig()
    domain_pattern: str = Field(
        r"^(?P<domain>[^/]+)/",
        description="regex on the path relative to SRC; group 'domain' is the label",
    )
    default_domain: str = "unlabelled"
    extensions: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".mid", ".midi")
    midi_program: int = Field(0, ge=0, le=127, description="GM program for MIDI without one")
    midi_soundfont: str = "fluidr3"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_file_bytes: int = Field(4 * 2**30, gt=0)


class AugmentConfig(StrictConfig):
    """Pitch shifts. MIDI-backed clips are transposed in the MIDI and re-rendered (exact);
    audio-only clips go through librosa's phase-vocoder shifter."""

    shifts_semitones: tuple[int, ...] = (-12, -5, 5, 12)
    audio_shifter: Literal["librosa_pv"] = "librosa_pv"
    roles: tuple[str, ...] = ("clean",)
    splits: tuple[str, ...] = ("train",)
    clip: ClipConfig = ClipConfig()

    @field_validator("shifts_semitones")
    @classmethod
    def _nonzero(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if 0 in v or any(abs(s) > 36 for s in v):
            raise ValueError(f"shifts {v}: expected non-zero semitone shifts within ±36")
        return v


class MelConfig(StrictConfig):
    """Log-mel front end. Defaults are DiffTransfer's (Comanducci et al. 2023)."""

    sample_rate_hz: int = 16000
    n_fft: int = 1024
    win_length_samples: int = 640
    hop_length_samples: int = 320
    n_mels: int = 128
    f_min_hz: float = 0.0
    f_max_hz: float = 8000.0
    center: bool = True
    log_floor: float = Field(1e-5, gt=0, description="magnitudes are clamped here before log")

    @model_validator(mode="after")
    def _consistent(self) -> "MelConfig":
        if self.win_length_samples > self.n_fft:
            raise ValueError(f"win_length_samples={self.win_length_samples} > n_fft={self.n_fft}")
        if self.f_max_hz > self.sample_rate_hz / 2:
            raise ValueError(f"f_max_hz={self.f_max_hz} above Nyquist {self.sample_rate_hz / 2}")
        return self


class FeatureConfig(StrictConfig):
    kind: Literal["logmel", "latent"] = "logmel"
    mel: MelConfig = MelConfig()
    segment_frames: int = Field(128, ge=8, description="mel frames per segment (a latent segment has "
                                "segment_frames / time_downsample latent frames)")
    segment_hop_frames: int = Field(128, ge=1)
    roles: tuple[str, ...] = ("clean", "midi_guide", "degraded")
    # Pinned (models:/name/version or shipped:...@sha256): part of the hash, so the latents of two
    # encoder versions land in two feature sets and never mix.
    encoder: str | None = Field(None, description="kind=latent: the autoencoder that encodes each log-mel segment")
    # Storage precision of the values. float16 halves the bytes and made the write 4x cheaper
    # (README "Features at their floor"); its rounding (relative 2^-11: <= 0.004 nats on a log-mel,
    # about 0.002 of a bin's standard deviation) sits below the denoiser's sigma_min (EDM's 0.002)
    # and far below what a listener or FAD resolves. Lossy storage of log-mels is lhotse's default too
    # (lilcom). Part of the hash: a float16 and a float32 set never mix.
    dtype: Literal["float16", "float32"] = Field(
        "float16", description="storage precision of the values (read back as float32)")

    def config_hash(self) -> str:
        """`encoder` left out when unset and `dtype` when float32, as before they existed: a float32
        set keeps its path and feature IDs (so every seeded draw over it, and the shipped models'
        training commands, stay as they were)."""
        d = self.model_dump(mode="json")
        if d["encoder"] is None:
            del d["encoder"]
        if d["dtype"] == "float32":
            del d["dtype"]
        return config_hash(d)

    @model_validator(mode="after")
    def _encoder_with_latent(self) -> "FeatureConfig":
        if (self.kind == "latent") != (self.encoder is not None):
            raise ValueError("kind='latent' needs an encoder (a pinned autoencoder URI), and only it: "
                             f"got kind={self.kind!r} with encoder={self.encoder!r}")
        return self
