"""The MLflow pyfunc model of a trained denoiser, logged "from code" (no pickled objects).

Input [batch, n_mels, frames] float32 (any frame count divisible by the network's downsampling
factor), param `sigma` -> D(x; sigma). After `mlflow.pyfunc.load_model(uri)`,
`.unwrap_python_model().model` is the EDMPrecond the samplers take and `.metadata` carries the
normalisation statistics and the mel config."""
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models import set_model


class ReinstrumentDenoiser(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from tasks.diffusion.checkpoint import load_checkpoint_bytes

        self.model, self.metadata = load_checkpoint_bytes(Path(context.artifacts["checkpoint"]).read_bytes())

    def predict(self, context, model_input, params: dict | None = None):
        sigma = float((params or {}).get("sigma", 1.0))
        with torch.no_grad():
            return self.model(torch.as_tensor(np.asarray(model_input, np.float32)), sigma).numpy()


set_model(ReinstrumentDenoiser())
