"""The work as plain, typed functions. Never imports Prefect, Ray or MLflow."""
