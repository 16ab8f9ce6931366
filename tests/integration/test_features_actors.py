"""Feature extraction on Ray actors: the same rows as in-process, and inside keep_workers() the
next extraction with the same front end is served by the same actors (issue 22: actor start-up
is most of a small extraction's time on Ray)."""
from __future__ import annotations

import time

import numpy as np
import ray

from infra.datasets import ShardedDataset
from ray_actors import pool
from ray_actors.features import extract_features
from schemas.configs import FeatureConfig
from tasks.feature_values import decode_values_column


def _rows(url: str) -> tuple[list[str], np.ndarray]:
    t = ShardedDataset.at(url, "features").read().sort_by("feature_id")
    return t.column("feature_id").to_pylist(), decode_values_column(t)


def test_kept_feature_actors_serve_the_next_extraction_with_in_process_rows(built_corpus, ray_local, tmp_path):
    _, res = built_corpus
    cfg = FeatureConfig(roles=("clean",))
    local = extract_features([res.clips_url], str(tmp_path / "local"), cfg, local=True)
    with pool.keep_workers():
        first = extract_features([res.clips_url], str(tmp_path / "a"), cfg, num_actors=2)
        (kept,) = pool._kept.values()
        second = extract_features([res.clips_url], str(tmp_path / "b"), cfg, num_actors=2)
        assert list(pool._kept.values()) == [kept], "the second extraction made new actors"
        # the values' dtype travels with each call: the same workers serve a float32 set
        extract_features([res.clips_url], str(tmp_path / "c"), cfg.model_copy(update={"dtype": "float32"}),
                         num_actors=2)
        assert list(pool._kept.values()) == [kept], "a float32 set made new actors"
    assert pool.kept_count() == 0
    # the scope released the actors (ray.kill is asynchronous: an actor may answer once more)
    deadline = time.monotonic() + 60
    for actor in kept.actors:
        while True:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=5)
            except ray.exceptions.RayActorError:
                break
            except ray.exceptions.GetTimeoutError:
                pass
            assert time.monotonic() < deadline, "a kept feature actor outlived its scope"
            time.sleep(0.2)
    ids, values = _rows(local["features_url"])
    for out in (first, second):
        assert out["rows"] == local["rows"] and out["shards_added"] == local["shards_added"]
        got_ids, got = _rows(out["features_url"])
        assert got_ids == ids
        # float16 values: one thread per actor against two in-process may round the last float32
        # bit differently, which float16 rounding can carry to one of its own ulps (2^-11 relative)
        np.testing.assert_allclose(got, values, rtol=2e-3, atol=1e-3)
