"""Report figures: grids render, and training curves are read back from real TensorBoard event files."""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from cosingan_monai.pipeline.figures import curves, read_scalars, slice_grid


def test_slice_grid_writes_png_with_outlines(tmp_path):
    hu = np.full((48, 48), -1000.0, np.float32)
    label = np.zeros((48, 48), np.uint8)
    label[10:20, 10:30] = 1
    label[12:16, 12:16] = 3
    out = slice_grid([(hu, label, "real"), (hu, None, "sample")], tmp_path / "grid.png")
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 5  # the infection outline is drawn
    assert not list(tmp_path.glob("*.tmp-*"))


def test_curves_read_back_from_tensorboard(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path / "tb" / "seg2d"))
    for step in range(5):
        writer.add_scalar("train_loss", 1.0 / (step + 1), step)
    writer.close()
    series = read_scalars(tmp_path / "tb")
    assert np.allclose([v for _, v in series["seg2d/train_loss"]], [1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert curves(series, tmp_path / "curves.png").stat().st_size > 1000
    assert curves({}, tmp_path / "none.png") is None
