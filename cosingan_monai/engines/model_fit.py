"""Which of k CoSinGANs renders which condition: by how well each model's training slice fits the condition.

A CoSinGAN learns one slice; asked for a mask far from its own (another lung area, lesion load or body size) it
extrapolates. With k models, each condition therefore goes to the model whose training slice is most like it,
with every model rendering an equal share, so the k slices' variety is kept (docs/design.md "k training slices").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from cosingan_monai.core.constants import INFECTION
from cosingan_monai.data.lungmask import body_from_lungs
from cosingan_monai.networks.pyramid import CoSinGAN

#: how synthesis items are spread over the models (SynthesisEvaluator's `model_assignment`)
ASSIGNMENTS = ("fit", "round_robin", "all")
#: names of the fit features, in order
FIT_FEATURES = ("lung fraction", "infection share of lung", "body fraction")
#: feature spread below which a feature is not rescaled further (fractions of the field of view)
MIN_SCALE = 0.02


def fit_features(lung: np.ndarray, infection: np.ndarray, body: np.ndarray) -> np.ndarray:
    """(lung area / image, infection area / lung area, body area / image) of one slice: resolution-free fractions."""
    lung, infection, body = (np.asarray(m, bool) for m in (lung, infection, body))
    n = float(lung.size)
    lung_px = float(lung.sum())
    share = float((infection & lung).sum()) / lung_px if lung_px else 0.0
    return np.array([lung_px / n, share, float((body | lung).sum()) / n], dtype=np.float64)


def label_features(
    label: np.ndarray, body: np.ndarray | None = None, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """`fit_features` of a 2D label map (0-3); without a body mask, the body is derived from the lungs (as the
    sampler does)."""
    lab = np.asarray(label)
    lung = (lab >= 1) & (lab <= 3)
    if body is None:
        body = body_from_lungs(lung, spacing=None if spacing is None else tuple(spacing))
    return fit_features(lung, lab == INFECTION, body)


def model_features(model: CoSinGAN) -> np.ndarray:
    """`fit_features` of the slice a CoSinGAN was trained on, from its stored training condition.

    The condition is stored area-resized to the model's grid, so the fractions are read as soft means (which area
    resizing keeps) rather than from thresholded masks.
    """
    cond = model.train_condition[0].detach().double().cpu().numpy()
    lung, infection = cond[0], cond[1]  # the infection lies inside the lungs
    if model.config.use_body and cond.shape[0] > 2:
        body = np.maximum(cond[2], lung)
    else:
        body = np.maximum(body_from_lungs(lung > 0.5).astype(np.float64), lung)
    lung_area = float(lung.sum())
    share = float(infection.sum()) / lung_area if lung_area else 0.0
    return np.array([float(lung.mean()), share, float(body.mean())], dtype=np.float64)


def fit_distances(conditions: np.ndarray, models: np.ndarray) -> np.ndarray:
    """(n, k) Euclidean distances between condition and model features, each feature scaled by its spread."""
    conditions, models = np.atleast_2d(conditions), np.atleast_2d(models)
    scale = np.maximum(np.vstack([conditions, models]).std(axis=0), MIN_SCALE)
    diff = (conditions[:, None, :] - models[None, :, :]) / scale
    return np.sqrt((diff**2).sum(axis=-1))


def balanced_fit(distances: np.ndarray) -> list[int]:
    """The model of each condition: least total distance with each model taking at most ceil(n / k) conditions.

    The Hungarian solver (scipy) on the models repeated to their capacity; ties resolve to the lower model index.
    """
    n, k = distances.shape
    if k == 1:
        return [0] * n
    capacity = math.ceil(n / k)
    columns = np.repeat(np.arange(k), capacity)
    rows, cols = linear_sum_assignment(distances[:, columns])
    out = [0] * n
    for r, c in zip(rows, cols, strict=True):
        out[int(r)] = int(columns[c])
    return out


def assign_models(features: Sequence[np.ndarray], models: Sequence[CoSinGAN], how: str = "fit") -> list[list[int]]:
    """For each condition (its fit features), the indices of the models that render it.

    "fit": one model each, `balanced_fit`; "round_robin": one model each, in turn; "all": every model.
    """
    if how not in ASSIGNMENTS:
        raise ValueError(f"model_assignment must be one of {ASSIGNMENTS}, got {how!r}")
    k = len(models)
    if how == "all":
        return [list(range(k)) for _ in features]
    if how == "round_robin" or k == 1 or len(features) == 0:
        return [[i % k] for i in range(len(features))]
    with torch.no_grad():
        model_feats = np.stack([model_features(m) for m in models])
    return [[m] for m in balanced_fit(fit_distances(np.stack(list(features)), model_feats))]
