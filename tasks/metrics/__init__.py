"""Metrics: realism (Fréchet distance of embedding Gaussians), faithfulness (pitch Jaccard
distance), enhancement (SI-SDR, log-spectral distance). Pure numpy; embeddings and pitch
trackers plug in on top."""
