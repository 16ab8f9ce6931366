"""Instrument-conditional denoisers: one network, a class label per instrument, a null label
(label dropout) for unconditional use and classifier-free guidance."""
import pytest
import torch

from schemas.diffusion import EDMConfig, unet_preset
from schemas.records import ModelCard
from schemas.configs import MelConfig
from schemas.training import TrainConfig
from schemas.transform import TransformConfig
from tasks.diffusion.conditional import labelled
from tasks.diffusion.precond import EDMPrecond
from tasks.diffusion.unet import UNet


def _model(num_labels: int = 3) -> EDMPrecond:
    torch.manual_seed(0)
    m = EDMPrecond(UNet(unet_preset("tiny", n_mels=16, num_labels=num_labels)), EDMConfig())
    # zero-initialised output layers make every label's output equal at init: perturb them
    for p in m.parameters():
        p.data += 0.05 * torch.randn_like(p)
    return m.eval()


def test_labels_change_the_estimate_and_null_is_the_default():
    m, x, s = _model(), torch.randn(2, 16, 16), torch.tensor([0.7, 0.7])
    with torch.no_grad():
        d0, d1 = m(x, s, None, torch.tensor([0, 0])), m(x, s, None, torch.tensor([1, 1]))
        null, default = m(x, s, None, torch.tensor([3, 3])), m(x, s)
    assert not torch.allclose(d0, d1)
    torch.testing.assert_close(null, default)  # no label = the null label


def test_label_out_of_range_and_label_on_unlabelled_model_are_refused():
    with torch.no_grad(), pytest.raises(ValueError, match="outside 0..3"):
        _model()(torch.randn(1, 16, 16), torch.tensor([1.0]), None, torch.tensor([4]))
    with pytest.raises(ValueError, match="no class labels"):
        labelled(_model(0), 1)


def test_classifier_free_guidance_is_the_closed_form():
    """D_w = D_null + w (D_label - D_null) (Ho & Salimans 2022, eq. 6 in x0 form); w = 1 is D_label."""
    m, x, s = _model(), torch.randn(2, 16, 16), torch.tensor([1.3, 0.2])
    with torch.no_grad():
        d_lab, d_null = m(x, s, None, torch.tensor(2)), m(x, s, None, torch.tensor(3))
        torch.testing.assert_close(labelled(m, 2)(x, s), d_lab)
        torch.testing.assert_close(labelled(m, 2, guidance=2.5)(x, s), d_null + 2.5 * (d_lab - d_null))
        torch.testing.assert_close(labelled(m, 2, guidance=0.0)(x, s), d_null)


def test_train_config_labels_and_unchanged_hash_without_them():
    plain = TrainConfig(domain="flute", features_url="/x", preset="cpu-latent")
    assert plain.config_hash() == "ade9ec8f23d6"  # the hash before labels existed: runs are found again
    multi = TrainConfig(domain="instruments", features_url="/x", preset="tiny", labels=("flute", "cello"))
    assert multi.unet_config(8).num_labels == 2 and multi.config_hash() != plain.config_hash()
    for bad in (dict(labels=("flute", "flute")), dict(labels=("instruments",)),
                dict(labels=("flute",), cond_domain="violin")):
        with pytest.raises(ValueError, match="expected distinct domains"):
            TrainConfig(domain="instruments", features_url="/x", **bad)


def test_card_label_lookup_says_what_was_expected():
    card = ModelCard(domain="instruments", mean=(0.0,), std=(1.0,), n_mels=1, mel=MelConfig(),
                     labels=("flute", "cello"))
    assert card.label_of("cello") == 1
    with pytest.raises(ValueError, match="name the target"):
        card.label_of(None)
    with pytest.raises(ValueError, match=r"no instrument 'oboe'; expected one of \['flute', 'cello'\]"):
        card.label_of("oboe")
    single = card.model_copy(update={"labels": (), "domain": "flute"})
    assert single.label_of(None) is None and single.label_of("flute") is None
    with pytest.raises(ValueError, match="has no instrument labels"):
        single.label_of("cello")


def test_transform_identity_unchanged_without_a_target():
    cfg = TransformConfig(model="shipped:flute-latent")
    assert set(cfg.identity()) == set(cfg.model_dump()) - {"target", "source", "guidance", "decoder", "auto"}
    assert cfg.model_copy(update={"target": "cello"}).identity()["target"] == "cello"
    assert "auto" in TransformConfig(model="shipped:flute-latent", auto={}).identity()  # auto is another run


def test_training_batches_carry_labels_with_dropout():
    from tasks.diffusion.kind import DenoiserKind
    from tasks.diffusion.train_data import TrainData

    n = 400
    data = TrainData(torch.randn(n, 8, 16), torch.full((n,), 16), torch.randn(4, 8, 16), torch.full((4,), 16), "valid",
                     ["a", "b", "c", "d"], train_y=torch.arange(n) % 2, val_y=torch.tensor([0, 1, 0, 1]))
    cfg = TrainConfig(domain="instruments", features_url="/x", preset="tiny", crop_frames=8, labels=("flute", "cello"),
                      label_dropout=0.25)
    kind = DenoiserKind.__new__(DenoiserKind)
    kind.cfg, kind.data = cfg, data
    b = kind.batch(torch.Generator().manual_seed(0), 2000)
    share_null = float((b["label"] == 2).float().mean())
    assert 0.2 < share_null < 0.3
    assert set(b["label"].tolist()) == {0, 1, 2}


def test_any_to_any_pairs_each_segment_with_another_instrument():
    """The labelled conditional baseline: every row is paired with the same segment (source,
    segment index) as another instrument plays it; a segment only one instrument plays is left out."""
    import pyarrow as pa

    from tasks.diffusion.train_data import _with_other_instrument

    rows = [  # feature_id, clip_id, segment_index, domain, values, valid frames
        ("f1", "c-flute", 0, "flute", [1.0], 8), ("f2", "c-violin", 0, "violin", [2.0], 6),
        ("f3", "c-flute", 1, "flute", [3.0], 8), ("f4", "c-cello", 0, "cello", [4.0], 8),
        ("f5", "c-alone", 0, "flute", [5.0], 8)]
    t = pa.table({"feature_id": [r[0] for r in rows], "clip_id": [r[1] for r in rows],
                  "segment_index": [r[2] for r in rows], "domain": [r[3] for r in rows],
                  "values": [r[4] for r in rows], "num_valid_frames": [r[5] for r in rows]})
    sources = {"c-flute": "s1", "c-violin": "s1", "c-cello": "s1", "c-alone": "s2"}
    out = _with_other_instrument(t, sources).to_pylist()
    by = {r["feature_id"]: r for r in out}
    assert set(by) == {"f1", "f2", "f4"}  # f3: segment 1 only flute plays; f5: a source of its own
    assert by["f1"]["cond_values"] == [4.0]  # the first other domain by name: cello
    assert by["f2"]["cond_values"] == [4.0] and by["f4"]["cond_values"] == [1.0]
    assert by["f1"]["num_valid_frames"] == 8 and by["f2"]["num_valid_frames"] == 6
    from schemas.training import TrainConfig
    with pytest.raises(ValueError, match="needs labels"):
        TrainConfig(domain="flute", features_url="/x", cond_domain="*")
    assert TrainConfig(domain="instruments", features_url="/x", labels=("flute", "cello"), cond_domain="*").paired
