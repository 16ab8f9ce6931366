"""The dataset manifest: the only list of shards a reader trusts. Written last, atomically."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "_manifest.json"


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str                      # e.g. "shards/part-00003.parquet", relative to the dataset
    num_rows: int = Field(ge=0)
    num_bytes: int = Field(ge=0)
    sha256: str
    config_hash: str
    created_at: str


class DatasetManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: str                     # clips | quarantine | features
    schema_version: str
    shards: list[ShardEntry] = []
    # Free-form, typed by the writer: e.g. feature normalisation statistics, the config.
    extra: dict = {}
    updated_at: str = ""

    @property
    def num_rows(self) -> int:
        return sum(s.num_rows for s in self.shards)

    def next_shard_index(self) -> int:
        return len(self.shards)
