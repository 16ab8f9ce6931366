"""Where a training command runs when not told (`--workers` unset): in this process on one
machine's CPUs, one Ray Train worker per GPU here, 2 on a cluster; the job records the count it used.
And how progress lines (training's, and every long stage's) say the time left."""
import pytest

from infra.ray_cluster import default_train_workers, ray_is_local
from infra.settings import get_settings


@pytest.fixture
def ray_env(monkeypatch):
    def set_address(address: str | None, setting: str | None = None):
        for name, value in (("RAY_ADDRESS", address), ("REINSTRUMENT_RAY_ADDRESS", setting)):
            monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_address
    get_settings.cache_clear()


@pytest.mark.parametrize("address, setting, gpu, workers", [
    (None, None, False, 0),               # one machine: in this process
    ("local", None, False, 0),            # "local" starts a local cluster: still one machine
    ("ray://head:10001", None, False, 2),  # a cluster: DDP workers, as before
    (None, "10.0.0.5:6379", False, 2),     # the product's own setting names a cluster too
    (None, None, True, 3),                # this machine's GPUs: one worker each (3 visible here)
    ("ray://head:10001", None, True, 2),  # a cluster's GPUs cannot be counted from here
])
def test_default_workers_follow_the_cluster(ray_env, monkeypatch, address, setting, gpu, workers):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    ray_env(address, setting)
    assert ray_is_local() is (address in (None, "local") and setting is None)
    assert default_train_workers(gpu) == workers


def test_a_job_left_to_decide_records_the_count_it_used(ray_env):
    from ray_actors.solver import settle_workers
    from schemas.training import TrainLogistics

    ray_env(None)
    assert TrainLogistics(out_url="/x").num_workers is None  # the CLI's unset --workers
    assert settle_workers(TrainLogistics(out_url="/x")).num_workers == 0
    assert settle_workers(TrainLogistics(out_url="/x", num_workers=3)).num_workers == 3  # explicit wins
    assert settle_workers(TrainLogistics(out_url="/x", use_gpu=True)).num_workers == 1  # no GPU visible: 1, not 0
    ray_env("ray://head:10001")
    assert settle_workers(TrainLogistics(out_url="/x")).num_workers == 2


@pytest.mark.parametrize("seconds, shown", [(4.2, "~4 s left"), (89, "~89 s left"), (90, "~2 min left"),
                                            (754, "~13 min left"), (3599, "~1 h 00 min left"), (3930, "~1 h 06 min left")])
def test_training_progress_says_how_long_is_left_as_a_person_reads_it(seconds, shown):
    from infra.progress import time_left

    assert time_left(seconds) == shown


def test_a_long_stage_logs_its_count_and_time_left_until_the_last_item(monkeypatch, capsys):
    from types import SimpleNamespace

    from infra import progress as progress_module

    monkeypatch.setenv("REINSTRUMENT_PROGRESS", "1")
    get_settings.cache_clear()
    clock = iter([0.0, 10.0, 20.0, 30.0, 40.0])  # start, then one item every 10 s
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    try:
        assert list(progress_module.progress(range(4), 4, "render corpus", every_s=5.0)) == [0, 1, 2, 3]
    finally:
        get_settings.cache_clear()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["[render corpus] 1/4 in 10 s, ~30 s left", "[render corpus] 2/4 in 20 s, ~20 s left",
                     "[render corpus] 3/4 in 30 s, ~10 s left", "[render corpus] 4/4 in 40 s"]
