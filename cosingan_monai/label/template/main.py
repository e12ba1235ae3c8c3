"""MONAI Label app (copied to APP_DIR/main.py by `cosingan-monai label-app`); runs only inside .venv-label.

It follows monailabel 0.8.5's `monaibundle` sample app (BundleInferTask/BundleTrainTask per bundle under
`model/`), but serves local bundles only: `--conf models all` (or no `models`) means every bundle in `model/`,
and a name that is not there is an error instead of a model-zoo download, since the server must work offline.
"""

from __future__ import annotations

import logging
import os

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)


def local_bundles(model_dir: str, requested: str | None) -> dict[str, str]:
    """Map model name -> bundle folder for the requested comma list ('all'/empty: every bundle in model_dir)."""
    available = sorted(
        n for n in os.listdir(model_dir) if os.path.isfile(os.path.join(model_dir, n, "configs", "inference.json"))
    )
    names = [m.strip() for m in (requested or "all").split(",") if m.strip()]
    if names in ([], ["all"]):
        names = available
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"{model_dir}: no bundle named {missing}; this app serves only {available}")
    return {n: os.path.join(model_dir, n) for n in names}


class CoSinGANLabelApp(MONAILabelApp):
    """Serves the pipeline's trained covid_seg_2d / covid_seg_3d bundles for auto-segmentation and training."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        self.models = local_bundles(self.model_dir, conf.get("models"))
        logger.info(f"+++ Using local bundles: {list(self.models)}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"cosingan-monai - COVID-19 lung/infection segmentation (MONAI Label {monailabel.__version__})",
            description="2D and 3D UNets trained on CoSinGAN-synthesized CT (lung, infection)",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        """One auto-segmentation task per bundle (label names come from the bundle's channel_def)."""
        infers: dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = BundleInferTask(path, self.conf)
            if not task.is_valid():
                raise RuntimeError(f"{path}: MONAI Label rejected this bundle for inference (see the log above)")
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        """One fine-tuning task per bundle, unless `--conf skip_trainers true`."""
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        trainers: dict[str, TrainTask] = {}
        for name, path in self.models.items():
            task = BundleTrainTask(path, self.conf)
            if task.is_valid():
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        """Active-learning 'next sample' strategies (no epistemic scoring: it needs dropout in the networks)."""
        return {"random": Random(), "first": First()}
