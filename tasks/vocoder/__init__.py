"""The neural vocoder: log-mel -> audio (vocos.py), its spectral losses (losses.py) and its model
kind for the training solver (kind.py)."""
