

def violin_bench_corpus(tmp, clips: int):
    """A private MLflow store under `tmp` and ten-second violin clips, at least `clips` of them:
    the transform benchmarks' common ground."""
    import os

    from schemas.configs import ClipConfig, CorpusConfig
    from tasks.corpus import run_corpus

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["REINSTRUMENT_MLFLOW_ARTIFACTS"] = (tmp / "artifacts").as_uri()
    return run_corpus(CorpusConfig(max_pieces=max(2, clips // 3), instruments=("violin",), voices=("soprano",),
                                   clip=ClipConfig(clip_s=10.0, overlap_s=0.0)), str(tmp / "corpus"), workers=2)
