"""The diffusion core: EDM preconditioning and loss, denoiser networks, samplers with warm
initialization, diffusion bridges, long-audio windowing, vocoders. Pure torch; no Prefect,
Ray or MLflow."""
