"""Which decoder turns a run's log-mels into audio: the vocoder a config names, resolved once per
run (`auto`: the registered champion, else the model the repository ships, else Griffin-Lim
with a one-line notice), and loaded for in-process use (mel2audio). Likewise the autoencoder of
latent features (`auto`: the champion, else the shipped one; there is no fallback)."""
from __future__ import annotations

import functools

from infra import shipped, tracking
from infra.shipped import shipped_decoder_for
from schemas.configs import MelConfig
from tasks.builders import decoder_of, load_autoencoder, load_vocoder, make_vocoder
from tasks.diffusion.checkpoint import read_checkpoint
from tasks.diffusion.vocoder import Vocoder

VOCODER_MODEL = "reinstrument-vocoder"
AUTOENCODER_MODEL = "reinstrument-autoencoder"
SHIPPED_TAG = "reinstrument.shipped_sha256"  # set on a registered copy of a shipped file (jobs/ship)
_noticed: set[str] = set()


def _champion_or_shipped(registered: str, kind: str) -> str | None:
    """`auto`'s spec: the registered champion, else the file the repository ships, else None."""
    if tracking.champion_version(registered) is not None:
        return f"models:/{registered}@{tracking.CHAMPION}"
    if shipped.shipped_path(kind).is_file():
        return f"{shipped.SHIPPED}{kind}"
    return None


def resolve_vocoder(spec: str) -> tuple[str | None, str | None]:
    """(pinned URI, name) of the decoder a config names; (None, None) is Griffin-Lim. `auto` is the
    registered champion vocoder, else the shipped one, else Griffin-Lim with a one-line notice."""
    if spec == "griffin-lim":
        return None, None
    if spec == "auto":
        spec = _champion_or_shipped(VOCODER_MODEL, "vocoder")
        if spec is None:
            if tracking.tracking_uri() not in _noticed:
                _noticed.add(tracking.tracking_uri())
                print(f"[vocoder] no {VOCODER_MODEL} champion and no shipped vocoder: decoding with Griffin-Lim "
                      "(train one: reinstrument train-vocoder CLIPS)")
            return None, None
    return tracking.resolve_model(spec)


def load_decoder(spec: str, mel: MelConfig, *, n_iter: int = 32, device: str = "cpu") -> tuple[Vocoder, str]:
    """The decoder a spec names, loaded, and its pinned name (e.g. reinstrument-vocoder/2)."""
    uri, name = resolve_vocoder(spec)
    if uri is None:
        return make_vocoder("griffin-lim", mel, n_iter=n_iter), f"griffin-lim ({n_iter} it.)"
    return load_vocoder(tracking.model_checkpoint(uri), name, mel, device), name


def resolve_autoencoder(spec: str) -> tuple[str, str]:
    """(pinned URI, name) of the autoencoder a config names; `auto`: the registered champion, else
    the shipped one. The shipped file registered in a store (`reinstrument demo`, jobs/ship) is
    pinned by its shipped URI either way: latent sets and models name their encoder, and one set of
    weights must have one name, or a shipped latent model would refuse the registered copy's features."""
    if spec == "auto":
        spec = _champion_or_shipped(AUTOENCODER_MODEL, "autoencoder")
        if spec is None:
            raise ValueError(f"no {AUTOENCODER_MODEL} champion in {tracking.tracking_uri()} and no shipped autoencoder: "
                             "name one (--encoder models:/reinstrument-autoencoder/N) or train one "
                             "(reinstrument train-autoencoder CLIPS)")
    uri, name = tracking.resolve_model(spec)
    if uri.startswith("models:/"):
        registered, version = name.rsplit("/", 1)
        sha = tracking.version_tag(registered, version, SHIPPED_TAG)
        if sha and shipped.shipped_path("autoencoder").is_file():
            shipped_uri, _ = tracking.resolve_model(f"{shipped.SHIPPED}autoencoder")
            if sha.startswith(shipped_uri.rsplit("@", 1)[1]):
                return shipped_uri, shipped_uri
    return uri, name


def pinned_metadata(uri: str) -> dict:
    """A pinned model's card, from its checkpoint (a pinned URI never changes its bytes: read once
    per registry; models:/NAME/1 of one store is not that of another)."""
    return _metadata(tracking.tracking_uri(), uri)


@functools.lru_cache(maxsize=32)
def _metadata(store: str, uri: str) -> dict:
    return read_checkpoint(tracking.model_checkpoint(uri))[2]


def _keeps_encoder(encoder: str, decoder_uri: str, decoder: str) -> None:
    _checked_pair(tracking.tracking_uri(), encoder, decoder_uri, decoder)


@functools.lru_cache(maxsize=8)
def _checked_pair(store: str, encoder: str, decoder_uri: str, decoder: str) -> None:
    """Refused now, not in a worker: a decoder that does not keep the encoder bit for bit (checked
    once per pinned pair; a sweep pins the same pair at every grid point)."""
    decoder_of(load_autoencoder(tracking.model_checkpoint(encoder), encoder),
               load_autoencoder(tracking.model_checkpoint(decoder_uri), decoder))


def pin_decoder(spec: str | None, model_uri: str, model: str) -> dict[str, str]:
    """The decoder of a latent model's outputs: `spec` (checked: an autoencoder that keeps the
    model's encoder bit for bit), else the decoder fine-tune the repository ships for that encoder
    (infra/shipped.shipped_decoder_for), else none (its own autoencoder); 'own' asks for its own."""
    encoder = pinned_metadata(model_uri).get("encoder")
    if spec is None and encoder:
        spec = shipped_decoder_for(tracking.resolve_model(encoder)[0])
    if spec is None or spec == "own":
        return {}
    if not encoder:
        raise ValueError(f"--decoder: {model} models log-mels, which no autoencoder decodes; a decoder is for a latent model")
    decoder_uri, decoder = tracking.resolve_model(spec)
    kind = pinned_metadata(decoder_uri).get("kind", "denoiser")
    if kind != "autoencoder":
        raise ValueError(f"--decoder {decoder} is a {kind} model; expected an autoencoder "
                         "(`reinstrument train-autoencoder`) that keeps the model's encoder")
    _keeps_encoder(encoder, decoder_uri, decoder)
    return {"decoder_uri": decoder_uri, "decoder": decoder}
