"""Which decoder turns a run's log-mels into audio: the vocoder a config names, resolved once per
run (`auto`: the registered champion, else the model the repository ships, else Griffin-Lim
with a one-line notice), and loaded for in-process use (mel2audio). Likewise the autoencoder of
latent features (`auto`: the champion, else the shipped one; there is no fallback)."""
from __future__ import annotations

from infra import shipped, tracking
from schemas.configs import MelConfig
from tasks.builders import load_vocoder, make_vocoder
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
