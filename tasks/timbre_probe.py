"""A quick timbre probe until FAD and JD land: a logistic regression on per-segment log-mel
statistics (mean and std over frames, per bin) that tells two domains apart, trained on their
train splits. P(target) of warm-started outputs shows whether they moved toward the target
domain; the mean |output - guide| (normalised units) shows how far they strayed."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def descriptors(logmels: np.ndarray) -> np.ndarray:
    """[n, bins, frames] natural-log mels -> [n, 2*bins]: per-bin mean and std over frames."""
    return np.concatenate([logmels.mean(axis=2), logmels.std(axis=2)], axis=1)


def fit_probe(target: np.ndarray, other: np.ndarray, seed: int = 0):
    """Classifier of target (label 1) vs other (label 0) from their log-mel segments."""
    x = np.concatenate([descriptors(target), descriptors(other)])
    y = np.r_[np.ones(len(target)), np.zeros(len(other))]
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed)).fit(x, y)


def p_target(probe, logmels: np.ndarray) -> np.ndarray:
    return probe.predict_proba(descriptors(logmels))[:, 1]
