"""The mask-supervised slice classifier: per-pixel map while training, slice logits otherwise, and it learns."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from cosingan_monai.networks.slice_classifier import MaskSupervisedClassifier


def _tiny(top_fraction: float = 0.01) -> MaskSupervisedClassifier:
    return MaskSupervisedClassifier(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, top_fraction=top_fraction)


def test_outputs_per_mode_and_torchscript():
    net = _tiny()
    x = torch.randn(3, 1, 32, 32)
    assert net.train()(x).shape == (3, 2, 32, 32)
    logits = net.eval()(x)
    assert logits.shape == (3, 2) and torch.all(logits[:, 0] == 0)
    scripted = torch.jit.script(net).eval()
    assert torch.allclose(scripted(x), logits, atol=1e-5)


def test_slice_score_is_the_mean_of_the_top_lesion_logits():
    net = _tiny(top_fraction=2 / 16)  # 2 of 16 pixels
    pixel = torch.zeros(1, 2, 4, 4)
    pixel[0, 1, 0, 0], pixel[0, 1, 1, 1], pixel[0, 1, 2, 2] = 5.0, 3.0, 1.0
    assert net.slice_logits(pixel)[0, 1].item() == pytest.approx(4.0)


@pytest.mark.parametrize("kwargs", [{"spatial_dims": 3}, {"top_fraction": 0.0}, {"top_fraction": 1.5}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        MaskSupervisedClassifier(**kwargs)


def test_mask_training_separates_slices_with_and_without_a_bright_blob():
    """Trained on masks alone for 60 steps, slices with a blob score higher than slices without (AUC 1)."""
    torch.manual_seed(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = 0.2 * torch.randn(n, 1, 32, 32)
        mask = torch.zeros(n, 1, 32, 32)
        has = torch.arange(n) % 2 == 0
        for i in torch.nonzero(has).flatten().tolist():
            r, c = torch.randint(4, 24, (2,)).tolist()
            mask[i, 0, r : r + 5, c : c + 5] = 1
        return x + 1.5 * mask, mask, has

    net, loss = _tiny(), DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):
        x, mask, _ = batch(8)
        opt.zero_grad()
        loss(net.train()(x), mask).backward()
        opt.step()
    x, _, has = batch(16)
    with torch.no_grad():
        score = net.eval()(x)[:, 1]
    assert score[has].min() > score[~has].max()
