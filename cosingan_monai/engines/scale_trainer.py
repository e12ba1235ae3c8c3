"""One pyramid scale's adversarial training as a `monai.engines.Trainer` subclass (the MAISI bundle's pattern).

No stock MONAI GAN trainer fits (docs/design.md): GanTrainer is unconditional and AdversarialTrainer shows the critic
the input. The step itself is plain PyTorch (`ScaleStep`); this engine adds Ignite's loop, events and handlers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.workflow import Workflow

from cosingan_monai.engines.scale_step import AugmentedPairs, ScaleStep


class ScaleTrainer(Trainer):
    """Ignite/MONAI engine running `iterations` ScaleStep iterations over an AugmentedPairs stream."""

    def __init__(
        self,
        step: ScaleStep,
        data_loader: AugmentedPairs,
        iterations: int,
        handlers: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(
            device=step.device,
            max_epochs=1,
            data_loader=data_loader,
            epoch_length=int(iterations),
            amp=False,  # AMP is the step's (bf16/fp16 by device); the base would make a deprecated fp16 scaler
            decollate=False,
        )
        self.step = step
        data_loader.prev_fn = step.coarse_input
        for h in handlers or ():
            h.attach(self)

    # the step's state, where handlers look for it
    model = property(lambda self: self.step.model)
    critic1 = property(lambda self: self.step.critic1)
    critic2 = property(lambda self: self.step.critic2)
    optimizer_g = property(lambda self: self.step.optimizer_g)
    optimizer_d = property(lambda self: self.step.optimizer_d)
    amp_policy = property(lambda self: self.step.amp_policy)

    def run(self) -> None:  # type: ignore[override]
        """Run the remaining iterations of this scale with the device's AMP policy (GradScaler only for fp16)."""
        self.step.scaler = self.step.amp_policy.scaler()
        Workflow.run(self)

    def _iteration(self, engine: ScaleTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, float]:
        return self.step(engine.state.iteration, batchdata)
