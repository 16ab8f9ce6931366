"""Sharded Parquet datasets that any number of concurrent writers can append to, locally or on S3.

Layout of a dataset at URL:
    URL/shards/part-<writer>-<k>.parquet   payload; the writer ID makes every name unique
    URL/_commits/<commit_id>.json          one per commit: the shards it adds and its metadata
    URL/_checkpoints/<commit_id>.json      optional: the fold of many commits (a read shortcut)

Commit protocol (the guarantees are stated in README, "Storage"):
1. A writer draws a random writer ID; its shards are `part-<writer>-<k>`, so two writers never
   write the same key and nothing another writer wrote is ever overwritten.
2. Each shard is placed in one atomic write (infra/storage.py).
3. The commit is one atomic write of a new object `_commits/<UTC ns>-<writer>-<seq>.json` that
   lists the shards. No read-modify-write of a shared object, so no lock and no lost update:
   two writers that commit at the same instant both land.
4. A reader lists `_commits/` and folds every commit in ID order (shards appended, `extra` merged
   by `merge_extra`). A shard no commit lists (its writer died first) is never read.
5. Rows are identified by the table's key (schemas.tables.TABLE_KEYS, content hashes): a row that
   two writers raced to add is read once, from the first commit.
Every CHECKPOINT_EVERY commits a writer also writes a checkpoint, the fold so far with the IDs it
covers, so a reader fetches the newest checkpoint plus the commits it does not cover instead of
every commit object. Checkpoints are derived data: deleting them changes nothing.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import time
import uuid
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from infra.storage import Storage
from schemas.manifest import CHECKPOINTS_DIR, COMMITS_DIR, Commit, DatasetManifest, ShardEntry
from schemas.tables import SCHEMA_COMPAT, SCHEMA_VERSION, SCHEMA_VERSIONS, TABLE_KEYS, TABLES

CHECKPOINT_EVERY = 64
LEGACY_MANIFEST = "_manifest.json"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_writer_id() -> str:
    return uuid.uuid4().hex[:12]


class SchemaMismatchError(ValueError):
    pass


def merge_extra(base: dict, add: dict) -> dict:
    """Merge a commit's `extra` into the fold: dicts merge key by key (recursively), lists become
    their union in first-seen order, any other value is replaced by the later commit's. So
    writers record only their own additions (inputs done, pieces built) and none is lost."""
    out = dict(base)
    for k, v in add.items():
        old = out.get(k)
        if isinstance(old, dict) and isinstance(v, dict):
            out[k] = merge_extra(old, v)
        elif isinstance(old, list) and isinstance(v, list):
            out[k] = old + [x for x in v if x not in old]
        else:
            out[k] = v
    return out


def _refuse_legacy(storage: Storage) -> bool:
    """A dataset of the first layout (one rewritten _manifest.json) must not look empty: a writer
    would start a second log beside it and its rows would be invisible. Returns False otherwise."""
    if storage.exists(LEGACY_MANIFEST):
        raise SchemaMismatchError(f"{storage.url} was written by an earlier version (one {LEGACY_MANIFEST}, schema "
                                  f"version 1); this code reads commit logs (schema {SCHEMA_VERSION}): "
                                  "re-create the dataset with this version")
    return False


class ShardedDataset:
    def __init__(self, storage: Storage, table: str):
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; expected one of {sorted(TABLES)}")
        self.storage = storage
        self.table = table
        self.schema = TABLES[table]
        self.version = SCHEMA_VERSIONS[table]
        self.key = TABLE_KEYS.get(table, ())

    @classmethod
    def at(cls, url: str, table: str) -> "ShardedDataset":
        return cls(Storage(url), table)

    @classmethod
    def detect(cls, url: str) -> "ShardedDataset":
        """The dataset at `url`, whatever its table (read from its first commit)."""
        st = Storage(url)
        first = next((p for p in st.find(COMMITS_DIR) if p.endswith(".json")), None)
        if first is None:
            _refuse_legacy(st)
            raise ValueError(f"no dataset at {url}: nothing under {COMMITS_DIR}/; expected a dataset folder "
                             "(e.g. <dest>/clips written by `reinstrument ingest`)")
        return cls(st, Commit.model_validate_json(st.read_bytes(first)).table)

    @property
    def url(self) -> str:
        return self.storage.url

    # -- the commit log -----------------------------------------------------------------
    def _commit_ids(self, folder: str) -> list[str]:
        return [p.rsplit("/", 1)[-1][:-len(".json")] for p in self.storage.find(folder) if p.endswith(".json")]

    def exists(self) -> bool:
        return bool(self._commit_ids(COMMITS_DIR)) or _refuse_legacy(self.storage)

    def manifest(self) -> DatasetManifest:
        """The fold of every visible commit (fresh listing; empty if nothing was committed)."""
        return self._read()[0]

    def _read(self) -> tuple[DatasetManifest, int]:
        """The fold, and how many commits were folded from the log (not from a checkpoint)."""
        ids = self._commit_ids(COMMITS_DIR)
        if not ids:
            _refuse_legacy(self.storage)
        fold = DatasetManifest(table=self.table, schema_version=self.version)
        checkpoints = self._commit_ids(CHECKPOINTS_DIR)
        if checkpoints:
            fold = self._validated(DatasetManifest.model_validate_json(
                self.storage.read_bytes(f"{CHECKPOINTS_DIR}/{max(checkpoints)}.json")))
        covered = set(fold.commits)
        todo = [i for i in ids if i not in covered]
        blobs = self.storage.read_many([f"{COMMITS_DIR}/{i}.json" for i in todo])
        for i in todo:
            fold = self._fold(fold, self._validated(Commit.model_validate_json(blobs[f"{COMMITS_DIR}/{i}.json"])))
        return fold, len(todo)

    def _validated(self, m: Commit | DatasetManifest) -> Commit | DatasetManifest:
        if m.table != self.table:
            raise SchemaMismatchError(f"{self.url} holds table {m.table!r}, expected {self.table!r}")
        if m.schema_version != self.version and m.schema_version not in SCHEMA_COMPAT.get(self.table, ()):
            raise SchemaMismatchError(
                f"{self.url} has {self.table} schema version {m.schema_version}; this code reads {self.version} "
                "(re-create the dataset with this version)")
        return m

    @staticmethod
    def _fold(fold: DatasetManifest, c: Commit) -> DatasetManifest:
        return fold.model_copy(update={"shards": fold.shards + c.shards, "extra": merge_extra(fold.extra, c.extra),
                                       "commits": fold.commits + [c.commit_id], "updated_at": c.created_at})

    def commit(self, new_shards: Sequence[ShardEntry], extra: dict | None = None,
               writer_id: str | None = None) -> DatasetManifest:
        """Publish shards (already written) and this writer's `extra` additions in one new commit
        object. Returns the manifest as read right after, which includes this commit."""
        writer = writer_id or new_writer_id()
        commit_id = f"{time.time_ns():020d}-{writer}-{next(_SEQ):06d}"
        c = Commit(commit_id=commit_id, table=self.table, schema_version=self.version,
                   shards=list(new_shards), extra=extra or {}, created_at=_now())
        self.storage.write_bytes(f"{COMMITS_DIR}/{commit_id}.json", c.model_dump_json(indent=1).encode())
        m, from_log = self._read()
        if from_log >= CHECKPOINT_EVERY:
            self.storage.write_bytes(f"{CHECKPOINTS_DIR}/{max(m.commits)}.json", m.model_dump_json().encode())
        return m

    def commit_shards(self, commit_ids: Sequence[str]) -> list[ShardEntry]:
        """The shards of the given commits, in that order (a batch of arrivals, e.g. the nightly
        job's): commit objects are immutable, so this never changes once they exist."""
        blobs = self.storage.read_many([f"{COMMITS_DIR}/{i}.json" for i in commit_ids])
        return [e for i in commit_ids for e in self._validated(
            Commit.model_validate_json(blobs[f"{COMMITS_DIR}/{i}.json"])).shards]

    # -- shards -------------------------------------------------------------------------
    def write_shard(self, name: str, table: pa.Table, config_hash: str) -> ShardEntry:
        """Serialise to Parquet in memory, then place it in one atomic write under shards/NAME."""
        table = table.select(self.schema.names).cast(self.schema)
        table = table.replace_schema_metadata({
            b"reinstrument.table": self.table.encode(),
            b"reinstrument.schema_version": self.version.encode(),
            b"reinstrument.config_hash": config_hash.encode(),
        })
        buf = io.BytesIO()
        # Payloads stored as is: FLAC is already compressed and feature values gain little from
        # zstd (float32 log-mels: ~3x slower to write/read for <15% smaller, measured). Metadata
        # columns get zstd. Nor do payloads get a dictionary or min/max statistics: Parquet would
        # try to dictionary-encode every value before giving up (2.3x slower writes, measured).
        payload = {f.name for f in self.schema if f.name.endswith("_flac") or f.name == "values"}
        meta = [f.name for f in self.schema if f.name not in payload]
        codecs = {f.name: ("none" if f.name in payload else "zstd") for f in self.schema}
        pq.write_table(table, buf, compression=codecs, use_dictionary=meta, write_statistics=meta)
        data = buf.getvalue()
        rel = f"shards/{name}.parquet"
        self.storage.write_bytes(rel, data)
        return ShardEntry(name=rel, num_rows=table.num_rows, num_bytes=len(data),
                          sha256=hashlib.sha256(data).hexdigest(), config_hash=config_hash,
                          created_at=_now())

    def read_shard(self, entry: ShardEntry, columns: Sequence[str] | None = None) -> pa.Table:
        data = self.storage.read_bytes(entry.name)
        # ParquetFile, not read_table: read_table goes through pyarrow.dataset, whose first import
        # alone cost ~1 s of a 5 s feature-extraction run (profiled). BufferReader, not BytesIO:
        # Arrow's reader threads then read memory directly instead of queueing on a Python file
        # object under the GIL (a 46 MB FLAC column: 0.33 s -> 0.02 s, measured).
        f = pq.ParquetFile(pa.BufferReader(data))
        want = list(columns) if columns else self.schema.names
        have = set(f.schema_arrow.names)
        if all(c in have for c in want):
            return f.read(columns=want)
        # a shard of an older compatible version (SCHEMA_COMPAT): columns added since read as nulls
        t = f.read(columns=[c for c in want if c in have])
        return pa.table({c: t.column(c) if c in have else pa.nulls(t.num_rows, self.schema.field(c).type)
                         for c in want})

    def iter_shards(self, columns: Sequence[str] | None = None,
                    manifest: DatasetManifest | None = None) -> Iterator[tuple[ShardEntry, pa.Table]]:
        """Manifest-listed shards in commit order, each row once: a key already read (or
        repeated within the shard) is dropped, so concurrent writers never duplicate a row."""
        want = list(columns) if columns else None
        read_cols = want and want + [k for k in self.key if k not in want]
        seen: set = set()
        for entry in (manifest or self.manifest()).shards:
            t = self.read_shard(entry, read_cols)
            if self.key:
                t = _first_occurrences(t, self.key, seen)
            yield entry, (t.select(want) if want else t)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole table, from manifest-listed shards only, each row once."""
        tables = [t for _, t in self.iter_shards(columns)]
        if not tables:
            schema = pa.schema([self.schema.field(c) for c in columns]) if columns else self.schema
            return schema.empty_table()
        return pa.concat_tables(tables)

    def column_values(self, column: str) -> set:
        return set(self.read([column]).column(column).to_pylist())


def _first_occurrences(t: pa.Table, key: Sequence[str], seen: set) -> pa.Table:
    keys = (t.column(key[0]).to_pylist() if len(key) == 1
            else list(zip(*(t.column(k).to_pylist() for k in key))))
    mask = []
    for k in keys:
        mask.append(k not in seen)
        seen.add(k)
    return t if all(mask) else t.filter(pa.array(mask))


_SEQ = itertools.count()  # commit sequence within this process (IDs stay unique at equal ns)


class ShardBuffer:
    """One writer: accumulates rows, writes full shards as it goes (bounded memory) under its own
    writer ID; `commit()` writes the rest and publishes everything in one commit object."""

    def __init__(self, dataset: ShardedDataset, config_hash: str, shard_rows: int):
        self.dataset = dataset
        self.config_hash = config_hash
        self.shard_rows = shard_rows
        self.writer_id = new_writer_id()
        self.rows: list[dict] = []
        self.entries: list[ShardEntry] = []   # written, not yet committed
        self.shards_written = 0               # names stay unique across commits of this writer

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        for k in range(0, len(self.rows), self.shard_rows):
            table = pa.Table.from_pylist(self.rows[k:k + self.shard_rows], schema=self.dataset.schema)
            name = f"part-{self.writer_id}-{self.shards_written:05d}"
            self.entries.append(self.dataset.write_shard(name, table, self.config_hash))
            self.shards_written += 1
        self.rows = []

    @property
    def num_rows(self) -> int:
        return sum(e.num_rows for e in self.entries) + len(self.rows)

    def commit(self, extra: dict | None = None) -> DatasetManifest | None:
        """Publish; writes nothing at all when nothing was added (a no-op re-run)."""
        self.flush()
        if not self.entries and not extra:
            return None
        m = self.dataset.commit(self.entries, extra, self.writer_id)
        self.entries = []
        return m

