"""Which decoder turns a run's log-mels into audio: the vocoder a config names, resolved once per
run (`auto`: the registered champion, else the model the repository ships, else Griffin-Lim
with a one-line notice), and loaded for in-process use (mel2audio). Likewise the autoencoder of
latent features (`auto`: the champion, else the shipped one; there is no fallback)."""
from __future__ import annotations

from infra import tracking
from schemas.configs import MelConfig
from tasks.builders import load_vocoder, make_vocoder
from tasks.diffusion.vocoder import Vocoder

VOCODER_MODEL = "reinstrument-vocoder"
AUTOENCODER_MODEL = "reinstrument-autoencoder"
_noticed: set[str] = set()


def resolve_vocoder(spec: str) -> tuple[str | None, str | None]:
    """(pinned URI, name) of the decoder a config names; (None, None) is Griffin-Lim. `auto` is the
    registered champion vocoder, else the shipped one, else Griffin-Lim with a one-line notice."""
    if spec == "griffin-lim":
        return None, None
    if spec == "auto":
        if tracking.champion_version(VOCODER_MODEL) is not None:
            spec = f"models:/{VOCODER_MODEL}@{tracking.CHAMPION}"
        elif tracking.shipped_path("vocoder").is_file():
            spec = f"{tracking.SHIPPED}vocoder"
        else:
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
    the shipped one."""
    if spec == "auto":
        if tracking.champion_version(AUTOENCODER_MODEL) is not None:
            spec = f"models:/{AUTOENCODER_MODEL}@{tracking.CHAMPION}"
        elif tracking.shipped_path("autoencoder").is_file():
            spec = f"{tracking.SHIPPED}autoencoder"
        else:
            raise ValueError(f"no {AUTOENCODER_MODEL} champion in {tracking.tracking_uri()} and no shipped autoencoder: "
                             "name one (--encoder models:/reinstrument-autoencoder/N) or train one "
                             "(reinstrument train-autoencoder CLIPS)")
    return tracking.resolve_model(spec)
