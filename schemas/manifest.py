"""A dataset's commit log: one immutable commit object per committed write, and the manifest a
reader folds from them (the only list of shards a reader trusts). See infra/datasets.py."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

COMMITS_DIR = "_commits"
CHECKPOINTS_DIR = "_checkpoints"


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str                      # e.g. "shards/part-<writer>-00003.parquet", relative to the dataset
    num_rows: int = Field(ge=0)
    num_bytes: int = Field(ge=0)
    sha256: str
    config_hash: str
    created_at: str


class Commit(BaseModel):
    """What one writer added in one commit. Written once, atomically, under a key no other
    writer can choose (`_commits/<commit_id>.json`), and never rewritten."""
    model_config = ConfigDict(extra="forbid")
    commit_id: str                 # <UTC ns, 20 digits>-<writer id>-<sequence>: sorts by time
    table: str
    schema_version: str
    shards: list[ShardEntry] = []
    # This commit's own additions only (merged into the folded manifest, see merge_extra).
    extra: dict = {}
    created_at: str = ""


class DatasetManifest(BaseModel):
    """The dataset as a reader sees it: every visible commit folded in commit-ID order."""
    model_config = ConfigDict(extra="forbid")
    table: str                     # clips | quarantine | features | outputs | metrics
    schema_version: str
    shards: list[ShardEntry] = []
    # Merged `extra` of every commit: e.g. the feature config, per-input statistics, corpus pieces.
    extra: dict = {}
    commits: list[str] = []        # IDs of the commits folded in
    updated_at: str = ""

    @property
    def num_rows(self) -> int:
        """Rows listed by the shards (a row two writers raced to add counts twice here; readers
        see it once, see ShardedDataset.iter_shards)."""
        return sum(s.num_rows for s in self.shards)
