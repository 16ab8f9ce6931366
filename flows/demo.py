"""`make demo`: the main job on the embedded defaults. Until training and transformation land,
it builds a small reference corpus and its log-mel feature set, and prints where they are."""
from __future__ import annotations

from prefect import flow

from flows.data import corpus_build_flow, features_flow
from schemas.configs import CorpusConfig, FeatureConfig

DEMO_CORPUS = CorpusConfig(collection="bach", max_pieces=16, instruments=("flute", "violin"),
                           soundfonts=("fluidr3",), voices=("soprano", "mix"))


@flow(name="demo", log_prints=True)
def demo_flow(root: str, corpus: CorpusConfig = DEMO_CORPUS, features: FeatureConfig = FeatureConfig(),
              workers: int = 2, actors: int = 2) -> dict:
    built = corpus_build_flow(dest=f"{root}/corpus", config=corpus, workers=workers)
    feats = features_flow(clips=[built["clips_url"]], out=f"{root}/features", config=features, actors=actors)
    return {"corpus": built, "features": feats}
