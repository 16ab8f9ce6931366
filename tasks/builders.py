"""The builders seam (audiocraft's pattern): the one place that turns a config or a model card
into a thing that runs: a model from its architecture or from a checkpoint, the model kind the
training solver trains, a vocoder, a FAD embedding, a transformation method. Samplers are built from a SamplerConfig by
tasks/diffusion/warm.run_sampler, which the methods below use. Jobs, actors and the training
solver ask here; nothing else constructs these."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from schemas.autoencoder import AutoencoderConfig, AutoencoderTrainConfig, MelDiscriminatorConfig
from schemas.configs import MelConfig, StrictConfig
from schemas.diffusion import ModelConfig
from schemas.records import AutoencoderCard, ModelCard, VocoderCard
from schemas.training import SolverConfig, TrainConfig
from schemas.vocoder import DiscriminatorConfig, VocoderTrainConfig, VocosConfig
from schemas.transform import TransformConfig
from tasks.autoencoder.discriminator import MelPatchDiscriminator
from tasks.autoencoder.kind import AutoencoderKind, autoencoder_data
from tasks.autoencoder.model import MelAutoencoder
from tasks.diffusion.bridges import ddib
from tasks.diffusion.checkpoint import read_checkpoint
from tasks.diffusion.conditional import conditioned, generate_conditional, labelled
from tasks.diffusion.kind import DenoiserKind
from tasks.diffusion.noise import ItemNoise
from tasks.diffusion.precond import Denoiser, EDMPrecond
from tasks.diffusion.train_data import read_columns_local, train_data_from_columns
from tasks.diffusion.unet import UNet
from tasks.diffusion.vocoder import VOCODERS, Vocoder
from tasks.diffusion.warm import warm_sigmas, warm_transform
from tasks.metrics.embeddings import EMBEDDINGS, Embedding
from tasks.solver import ModelKind
from tasks.vocoder.data import vocoder_data
from tasks.vocoder.discriminators import Discriminators
from tasks.vocoder.kind import VocoderKind
from tasks.vocoder.vocos import NeuralVocoder, Vocos


def build_model(cfg: StrictConfig) -> torch.nn.Module:
    """A freshly initialised model of an architecture config: the denoiser D(x; sigma) (EDM
    eq. 7) around the configured U-Net, the Vocos vocoder, its discriminators, or the mel autoencoder."""
    if isinstance(cfg, ModelConfig):
        return EDMPrecond(UNet(cfg.unet), cfg.edm)
    if isinstance(cfg, VocosConfig):
        return Vocos(cfg)
    if isinstance(cfg, DiscriminatorConfig):
        return Discriminators(cfg)
    if isinstance(cfg, AutoencoderConfig):
        return MelAutoencoder(cfg)
    if isinstance(cfg, MelDiscriminatorConfig):
        return MelPatchDiscriminator(cfg)
    raise ValueError(f"no model is built from a {type(cfg).__name__}; expected a ModelConfig, a VocosConfig, "
                     "a DiscriminatorConfig, an AutoencoderConfig or a MelDiscriminatorConfig")


# The training config of each model kind the solver trains (ray_actors/solver.py reads it back by name).
TRAIN_CONFIGS: dict[str, type[SolverConfig]] = {"denoiser": TrainConfig, "vocoder": VocoderTrainConfig,
                                                "autoencoder": AutoencoderTrainConfig}
CARDS: dict[str, type[StrictConfig]] = {"denoiser": ModelCard, "vocoder": VocoderCard, "autoencoder": AutoencoderCard}


def kind_of(cfg: SolverConfig) -> str:
    return next(k for k, c in TRAIN_CONFIGS.items() if isinstance(cfg, c))


def training_data(cfg: SolverConfig, card: StrictConfig, rows: dict[str, list] | None = None):
    """What a kind trains on: denoisers the feature rows (from Ray Data's shard when given, else
    read here), vocoders the clean clips' audio, autoencoders their log-mels."""
    if isinstance(cfg, TrainConfig):
        return train_data_from_columns(rows if rows is not None else read_columns_local(cfg), cfg, card)
    if isinstance(cfg, AutoencoderTrainConfig):
        return autoencoder_data(cfg)
    return vocoder_data(cfg)


def make_kind(cfg: SolverConfig, card: StrictConfig, data, encoder: bytes | None = None) -> ModelKind:
    """The model kind the training solver trains (tasks/solver.py): the denoiser (conditional,
    the baseline, when the config pairs a source domain), the vocoder or the autoencoder. A latent
    denoiser's previews are decoded by its encoder's decoder (`encoder`: that checkpoint's bytes)."""
    if isinstance(cfg, TrainConfig):
        to_logmel = None
        if card.representation == "latent":
            if encoder is None:
                raise ValueError(f"the latent model of {card.domain} needs its autoencoder ({card.encoder}) loaded")
            ae = load_autoencoder(encoder, str(card.encoder), card.mel).model
            to_logmel = lambda z: ae.decode(z[None].float())[0].detach()  # noqa: E731
        return DenoiserKind(cfg, card, data, make_vocoder("griffin-lim", card.mel), to_logmel=to_logmel)
    if isinstance(cfg, AutoencoderTrainConfig):
        return AutoencoderKind(cfg, data)
    return VocoderKind(cfg, data)


def load_checkpoint_bytes(data: bytes, device: str | torch.device = "cpu") -> tuple[EDMPrecond, dict]:
    """(model in eval mode, metadata). Raises ValueError on anything but our checkpoint format."""
    cfg, state, metadata = read_checkpoint(data, device)
    model = build_model(cfg).to(device)
    model.load_state_dict(state, strict=True)
    return model.eval(), metadata


@dataclass
class LoadedModel:
    model: EDMPrecond
    card: ModelCard       # normalisation statistics, mel config, domain
    name: str             # registered name/version, e.g. "reinstrument-flute/3"


def load_model(data: bytes, name: str, device: str | torch.device = "cpu") -> LoadedModel:
    """A registered model's checkpoint bytes -> the model and its card."""
    model, metadata = load_checkpoint_bytes(data, device)
    if metadata.get("kind", "denoiser") != "denoiser":
        raise ValueError(f"{name} is not a denoiser but a {metadata['kind']} model; expected a denoiser (`reinstrument train`)")
    try:
        card = ModelCard.model_validate(metadata)
    except ValueError as e:
        raise ValueError(f"{name} carries no readable model card ({e}); expected a model trained by "
                         "`reinstrument train`") from None
    return LoadedModel(model, card, name)


def make_vocoder(name: str, mel: MelConfig, **kwargs) -> Vocoder:
    """A vocoder that needs no weights, by name (Griffin-Lim); trained ones come from `load_vocoder`."""
    if name not in VOCODERS:
        raise ValueError(f"unknown vocoder {name!r}; available: {sorted(VOCODERS)}, or a trained vocoder's model URI")
    return VOCODERS[name](mel, **kwargs)


def load_vocoder(data: bytes, name: str, mel: MelConfig | None = None, device: str | torch.device = "cpu") -> NeuralVocoder:
    """A trained vocoder's checkpoint bytes -> the Vocoder. Refuses another kind of model, and a
    vocoder whose front end differs from the features it would decode (`mel`)."""
    model, metadata = load_checkpoint_bytes(data, device)
    if not isinstance(model, Vocos) or metadata.get("kind") != "vocoder":
        raise ValueError(f"{name} is not a vocoder (a {metadata.get('kind', type(model).__name__)} model); "
                         "expected a model registered by `reinstrument train-vocoder`")
    card = VocoderCard.model_validate(metadata)
    if mel is not None and card.mel != mel:
        raise ValueError(f"{name} decodes other log-mels ({card.mel}) than these features ({mel})")
    return NeuralVocoder(model, name, device)


@dataclass
class LoadedAutoencoder:
    model: MelAutoencoder
    card: AutoencoderCard
    name: str             # registered name/version, e.g. "reinstrument-autoencoder/2"


def load_autoencoder(data: bytes, name: str, mel: MelConfig | None = None, device: str | torch.device = "cpu") -> LoadedAutoencoder:
    """A trained autoencoder's checkpoint bytes -> the model (eval mode) and its card. Refuses
    another kind of model, and one whose front end differs from the log-mels it would encode."""
    model, metadata = load_checkpoint_bytes(data, device)
    if not isinstance(model, MelAutoencoder) or metadata.get("kind") != "autoencoder":
        raise ValueError(f"{name} is not an autoencoder (a {metadata.get('kind', type(model).__name__)} model); "
                         "expected a model registered by `reinstrument train-autoencoder`")
    card = AutoencoderCard.model_validate(metadata)
    if mel is not None and card.mel != mel:
        raise ValueError(f"{name} encodes other log-mels ({card.mel}) than these ({mel})")
    return LoadedAutoencoder(model, card, name)


def decoder_of(own: LoadedAutoencoder, other: LoadedAutoencoder) -> LoadedAutoencoder:
    """`other` as the decoder of `own`'s latents: only when it keeps `own`'s encoder bit for bit
    (a decoder fine-tuned with the encoder frozen); any other autoencoder reads another latent."""
    mine, theirs = own.model.encoder.state_dict(), other.model.encoder.state_dict()
    same = mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k].to(mine[k].dtype)) for k in mine)
    if not same or own.card.latent_channels != other.card.latent_channels:
        raise ValueError(f"{other.name} does not keep the encoder of {own.name}, so it cannot decode its latents; "
                         "expected a decoder fine-tuned from it with the encoder frozen "
                         "(train-autoencoder --init-from ... with {\"freeze_encoder\": true})")
    return other


def make_embedding(name: str, weights_dir: str, vggish_weights: str | None = None) -> Embedding:
    from tasks.metrics import musicnn, vggish

    if name in ("musicnn", "musicnn-msd"):
        return musicnn.Musicnn("MSD_musicnn", weights_dir)
    if name == "musicnn-mtt":
        return musicnn.Musicnn("MTT_musicnn", weights_dir)
    if name == "vggish":
        if not vggish_weights:
            raise ValueError("the vggish embedding needs a weights file: pass --vggish-weights PATH "
                             "(a torchvggish-style state dict; see README 'Metrics')")
        return vggish.VGGish.from_file(vggish_weights)
    raise ValueError(f"unknown embedding {name!r}; expected one of {EMBEDDINGS}")


# (guide windows, start noise eps, per-item noise) -> output windows, all [B, bins, frames], normalised
Method = Callable[[torch.Tensor, torch.Tensor, ItemNoise], torch.Tensor]


def target_denoiser(cfg: TransformConfig, target: LoadedModel) -> Denoiser:
    """D(x; sigma) of the target: a labelled model bound to the target instrument (with its
    guidance weight) is an ordinary denoiser for every method."""
    label = target.card.label_of(cfg.target)
    if label is None and cfg.guidance != 1.0:
        raise ValueError(f"guidance {cfg.guidance} needs a model that learned several instruments; {target.name} did not")
    return target.model if label is None else labelled(target.model, label, cfg.guidance)


def make_method(cfg: TransformConfig, target: LoadedModel, source: LoadedModel | None = None) -> Method:
    """The transformation of one fixed-shape batch of windows, checked against the models now
    (before any audio is read): warm init (docs/design.md), DDIB (Su et al. 2023) or the
    DiffTransfer-style conditional baseline."""
    is_cond = target.model.net.cfg.cond_channels > 0
    if (cfg.method == "conditional") != is_cond:
        raise ValueError(f"method {cfg.method!r} needs {'a conditional' if cfg.method == 'conditional' else 'an unconditional'} "
                         f"model, but {target.name} is {'conditional' if is_cond else 'unconditional'}")
    edm = target.model.cfg
    label = target.card.label_of(cfg.target)
    denoiser = target_denoiser(cfg, target)
    if cfg.method == "warm_init":
        return lambda g, eps, noise: warm_transform(denoiser, g, cfg.sampler, edm, cfg.warm, noise, start_noise=eps)
    if cfg.method == "conditional":
        return lambda g, eps, noise: generate_conditional(conditioned(target.model, g, label), g, cfg.sampler, edm, noise)
    if source is None:
        raise ValueError("ddib needs the source model")
    if source.card.mel != target.card.mel:
        raise ValueError(f"ddib: source and target models use different mel configs ({source.card.mel} vs {target.card.mel})")
    if source.card.encoder != target.card.encoder:
        raise ValueError(f"ddib: {source.name} models the latents of {source.card.encoder or 'no encoder (log-mel)'}, "
                         f"{target.name} those of {target.card.encoder or 'no encoder (log-mel)'}; a bridge needs one space")
    src_label = source.card.label_of(cfg.source) if source.card.labels else None
    src = source.model if src_label is None else labelled(source.model, src_label)
    sigmas = warm_sigmas(cfg.sampler, edm, cfg.warm)
    sigma_start, steps = float(sigmas[0]), max(1, len(sigmas) - 1)
    # euler | heun only (TransformConfig refuses the others): DDIB runs the ODE both ways
    return lambda g, eps, noise: ddib(src, denoiser, g, sigma_start, steps, edm,
                                      rho=cfg.sampler.rho, sampler=cfg.sampler.name)
