"""The MLflow pyfunc model of a trained denoiser, vocoder or autoencoder, logged "from code" (no pickled objects) by the
train job; MLflow runs this file when a user serves the model (`mlflow models serve`). The
pipeline itself reads the checkpoint file and builds the model (tasks/builders.load_model).

Input [batch, n_mels, frames] float32 (any frame count), or {"x", "cond"} for a conditional-
baseline model; param `sigma` -> D(x; sigma). A vocoder ignores `sigma` and returns audio; an autoencoder
returns the reconstruction of its input log-mel (decode of the posterior mean)."""
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models import set_model


class ReinstrumentDenoiser(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from tasks.builders import load_checkpoint_bytes

        self.model, self.metadata = load_checkpoint_bytes(Path(context.artifacts["checkpoint"]).read_bytes())

    # np.ndarray: MLflow then keeps to the logged signature (tensor specs with free frame counts)
    # instead of inferring one from the hint; a conditional model's input arrives as a dict of them
    def predict(self, context, model_input: np.ndarray, params: dict | None = None):
        sigma = float((params or {}).get("sigma", 1.0))
        as_tensor = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        with torch.no_grad():
            if self.metadata.get("kind") in ("vocoder", "autoencoder"):
                return self.model(as_tensor(model_input)).numpy()
            if isinstance(model_input, dict):  # conditional baseline: {"x": ..., "cond": source mel}
                return self.model(as_tensor(model_input["x"]), sigma, as_tensor(model_input["cond"])).numpy()
            return self.model(as_tensor(model_input), sigma).numpy()


set_model(ReinstrumentDenoiser())
