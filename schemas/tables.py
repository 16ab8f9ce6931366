"""Arrow schemas of every table. Bump a table's version in SCHEMA_VERSIONS on any incompatible
change to it; each shard records the version and the config hash that made it (Parquet key-value
metadata)."""
from __future__ import annotations

import pyarrow as pa

# 2: datasets are commit logs (_commits/), not one rewritten _manifest.json (infra/datasets.py).
SCHEMA_VERSION = "2"

CLIPS = pa.schema([
    ("clip_id", pa.string()),          # content hash: source content + config + span
    ("source_id", pa.string()),        # content hash of the source (file bytes or MIDI + render)
    ("parent_id", pa.string()),        # the clip this one was derived from (augmentation, guides)
    ("clean_id", pa.string()),         # for guides: the clean clip it stands in for
    ("role", pa.string()),             # clean | midi_guide | degraded
    ("domain", pa.string()),           # target-domain label, e.g. "flute"
    ("instrument", pa.string()),
    ("gm_program", pa.int16()),
    ("soundfont", pa.string()),
    ("piece", pa.string()),
    ("voice", pa.string()),
    ("split", pa.string()),            # train | valid | test, by piece/source, never by clip
    ("source_uri", pa.string()),
    ("start_s", pa.float64()),         # offset of the clip in its source
    ("duration_s", pa.float64()),
    ("sample_rate_hz", pa.int32()),
    ("num_samples", pa.int64()),
    ("gain_db", pa.float32()),         # loudness normalisation applied
    ("loudness_lufs", pa.float32()),   # before normalisation
    ("pitch_shift_semitones", pa.int16()),
    ("degradation", pa.string()),      # JSON of the degradation, for degraded guides
    ("out_of_range_notes", pa.int32()),
    ("midi", pa.binary()),             # the clip's MIDI (times relative to the clip), if known
    ("audio_flac", pa.binary()),       # mono 16-bit FLAC payload
    ("config_hash", pa.string()),
])

QUARANTINE = pa.schema([
    ("source_uri", pa.string()),
    ("source_id", pa.string()),
    ("stage", pa.string()),            # ingest | corpus | augment | features
    ("reason", pa.string()),           # one line: what was wrong and what was expected
    ("detail", pa.string()),
    ("config_hash", pa.string()),
])

FEATURES = pa.schema([
    ("feature_id", pa.string()),       # content hash: clip_id + feature config + segment
    ("clip_id", pa.string()),
    ("kind", pa.string()),             # logmel | latent (the autoencoder's posterior mean of the log-mel segment)
    ("domain", pa.string()),
    ("role", pa.string()),
    ("split", pa.string()),
    ("segment_index", pa.int32()),
    ("start_frame", pa.int32()),       # mel frame of the clip where the segment starts (either kind)
    ("num_frames", pa.int32()),        # segment length in frames of its kind (padded to the configured length)
    ("num_valid_frames", pa.int32()),  # frames that hold signal; the rest is the log floor (or its encoding)
    ("num_bins", pa.int32()),          # mel bins (logmel) or latent channels (latent)
    # Row-major [num_bins, num_frames], little-endian, as raw bytes of values_dtype (decode with
    # tasks.feature_values.decode_values, or np.frombuffer(values, values_dtype)). Bytes, not a
    # Parquet list of floats: a list stores a repetition level per float, which made writing a
    # shard cost half as much as computing it (measured, README "Features at their floor").
    ("values", pa.binary()),
    ("values_dtype", pa.string()),     # float16 (default, FeatureConfig.dtype) | float32
    ("config_hash", pa.string()),
])

METRICS = pa.schema([
    ("run_id", pa.string()),
    ("method", pa.string()),           # warm_init | ddib | conditional | reference (no transform)
    ("task", pa.string()),             # timbre | midi2real | enhance
    ("t_init", pa.float64()),          # tau_init (docs/design.md), or null
    ("sigma_start", pa.float64()),
    ("lam", pa.float64()),             # lambda, the noise scale of the warm start
    ("metric", pa.string()),           # fad | fad_inf | jd | jd_melody | jd_midi | f1_midi | si_sdr_db | lsd_db | mel_l1_db
    ("embedding", pa.string()),        # FAD only: musicnn-msd, musicnn-mtt, vggish
    ("reference", pa.string()),        # what it was measured against: domain:<d> (FAD), guide, midi, clean
    ("n", pa.int64()),                 # clips (FAD) or pairs aggregated
    ("mean", pa.float64()),
    ("ci_low", pa.float64()),          # 95 % bootstrap interval; null where none (FAD_inf)
    ("ci_high", pa.float64()),
    ("detail", pa.string()),
])

# `compare` (issue 20): the metrics rows of every method of every task, with which method and subset
# (all inputs, or the inputs of one degradation kind) each row measures.
COMPARISON = pa.schema(list(METRICS) + [
    ("key", pa.string()),              # the method's slug: guide, identity, warm, warm-0.05, ddib, conditional, ...
    ("label", pa.string()),            # the method as the table shows it
    ("subset", pa.string()),           # all | a degradation kind (enhance)
])

OUTPUTS = pa.schema([
    ("output_key", pa.string()),       # content hash of (input clip, model version, method, settings)
    ("run_id", pa.string()),
    ("clip_id", pa.string()),          # the input (guide) clip
    ("clean_id", pa.string()),         # the guide's clean counterpart, when the corpus knows it
    ("input_domain", pa.string()),
    ("target_domain", pa.string()),
    ("model", pa.string()),            # registered name/version, e.g. reinstrument-flute/3
    ("source_model", pa.string()),     # ddib only
    ("method", pa.string()),
    ("task", pa.string()),
    ("t_init", pa.float64()),
    ("sigma_start", pa.float64()),     # the sigma the run actually started from
    ("lam", pa.float64()),
    ("steps", pa.int32()),
    ("sampler", pa.string()),
    ("seed", pa.int64()),
    ("vocoder", pa.string()),          # the decoder: griffin-lim (N it.), reinstrument-vocoder/2, shipped:vocoder@<sha>
    ("output_uri", pa.string()),       # FLAC, mono, the model's sample rate
    ("sha256", pa.string()),           # of the FLAC bytes: `reinstrument pull` verifies it
    ("sample_rate_hz", pa.int32()),
    ("duration_s", pa.float64()),
    ("seconds_spent", pa.float64()),   # wall time of this clip's transform + vocode + encode
    ("config_hash", pa.string()),
    ("source_uri", pa.string()),       # the guide's source (a recording, or a corpus render)
    ("source_id", pa.string()),
    ("start_s", pa.float64()),         # the guide clip's offset in its source
    ("piece", pa.string()),            # the piece, or an ingested file's path relative to its folder
    ("peak_dbfs", pa.float64()),       # of the stored (loudness-normalised) output
    ("t_init_rule", pa.string()),      # given (one tau_init for the run) | auto (chosen for this clip by the
                                       # instrument probe) | auto-noise (by the input's degradation level)
    ("p_target", pa.float64()),        # auto: the probe's P(target | x̂0) at the chosen tau_init
])

# One row per whole-recording output file (tasks/recordings.py): the clips it was stitched from are
# the outputs rows of `clip_keys`.
RECORDINGS = pa.schema([
    ("recording_key", pa.string()),    # hash of (its clip outputs' keys, format, rate, name)
    ("run_id", pa.string()),
    ("source_id", pa.string()),
    ("source_uri", pa.string()),
    ("piece", pa.string()),            # the source's path relative to the ingested folder
    ("name", pa.string()),             # the output's path under the run's recordings/ folder
    ("output_uri", pa.string()),
    ("sha256", pa.string()),
    ("format", pa.string()),           # flac | wav
    ("sample_rate_hz", pa.int32()),
    ("duration_s", pa.float64()),
    ("source_duration_s", pa.float64()),
    ("source_sample_rate_hz", pa.int32()),
    ("source_channels", pa.int32()),   # the output is mono whatever the source
    ("start_s", pa.float64()),         # the span of the source it covers: [start_s, start_s + duration_s)
    ("clips", pa.int32()),
    ("clip_keys", pa.list_(pa.string())),
    ("target_domain", pa.string()),
    ("model", pa.string()),
    ("source_model", pa.string()),
    ("vocoder", pa.string()),
    ("method", pa.string()),
    ("task", pa.string()),
    ("t_init", pa.float64()),
    ("sigma_start", pa.float64()),
    ("lam", pa.float64()),
    ("steps", pa.int32()),
    ("sampler", pa.string()),
    ("seed", pa.int64()),
    ("operating_point", pa.string()),  # where t_init and lam came from: the command line, a sweep, the default
    ("config_hash", pa.string()),
])

# Per table: a change to one table's layout does not orphan the datasets of the others.
# features 3: values as bytes of values_dtype (2: a list of float32). outputs 3: each row names its
# source and span.
SCHEMA_VERSIONS: dict[str, str] = {"clips": SCHEMA_VERSION, "quarantine": SCHEMA_VERSION, "features": "3",
                                   "metrics": SCHEMA_VERSION, "comparison": SCHEMA_VERSION, "outputs": "4", "recordings": "1"}

# Older versions a reader still accepts: their columns are today's minus some added since, which
# read as nulls (a run resumed after the upgrade keeps its outputs). outputs 2: before source/span;
# 3: before t_init_rule/p_target.
SCHEMA_COMPAT: dict[str, frozenset[str]] = {"outputs": frozenset({"2", "3"})}

TABLES: dict[str, pa.Schema] = {"clips": CLIPS, "quarantine": QUARANTINE, "features": FEATURES, "metrics": METRICS,
                                "comparison": COMPARISON,
                                "outputs": OUTPUTS, "recordings": RECORDINGS}

# The identity of a row: two writers that raced to add the same row (same content-hash key) leave it
# visible once; the first commit wins. Metrics rows have no natural key (each sweep writes its own).
TABLE_KEYS: dict[str, tuple[str, ...]] = {"clips": ("clip_id",), "features": ("feature_id",),
                                          "outputs": ("output_key",), "recordings": ("recording_key",),
                                          "quarantine": ("source_uri", "source_id", "stage", "reason")}
