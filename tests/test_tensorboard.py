"""What reaches TensorBoard, read back from the event files: named validation images in radiological display (the
report's rule, data.io.ras_to_display) for the segmenters and the GAN, the GAN's learning rates and hparams."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cosingan_monai.data.io import ras_to_display
from cosingan_monai.pipeline import bundle_runner as bundles

pytestmark = pytest.mark.usefixtures("one_torch_thread")
IMAGE_TAGS = {"val/image", "val/label", "val/prediction"}


def events(log_dir: Path) -> EventAccumulator:
    """Every event of a log folder (all of its files, hparams included), nothing sampled away."""
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def image(acc: EventAccumulator, tag: str, mode: str = "L") -> np.ndarray:
    """The last image logged under `tag`, as a grayscale (rows, cols) array (or (rows, cols, 3) for mode RGB)."""
    return np.asarray(Image.open(io.BytesIO(acc.Images(tag)[-1].encoded_image_string)).convert(mode), np.float32)


def hparams(acc: EventAccumulator) -> dict[str, object]:
    """The hyper-parameters of the run's hparams session (TensorBoard's HPARAMS tab)."""
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}


def marker_slice(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A RAS (x, y) HU slice with lungs and one bright block at the patient's right-anterior corner (high x, high y),
    labelled infection: asymmetric under every flip and transpose."""
    hu = np.full((size, size), -1000.0, np.float32)
    label = np.zeros((size, size), np.uint8)
    q = size // 4
    label[q : 2 * q, q : 3 * q] = 1
    label[2 * q : 3 * q, q : 3 * q] = 2
    hu[label > 0] = -850.0
    x0 = size - size // 5
    hu[x0 : size - 2, x0 : size - 2] = 200.0
    label[x0 : size - 2, x0 : size - 2] = 3
    return hu, label


def corner_is_top_left(shown: np.ndarray, size: int) -> None:
    """The displayed marker occupies the top-left corner only: anterior up, patient right on the image's left."""
    b = size // 5
    corners = {
        "top-left": shown[2:b, 2:b],
        "top-right": shown[2:b, -b:-2],
        "bottom-left": shown[-b:-2, 2:b],
        "bottom-right": shown[-b:-2, -b:-2],
    }
    means = {k: float(v.mean()) for k, v in corners.items()}
    assert max(means, key=means.get) == "top-left", means
    assert means["top-left"] > 200 and all(v < 60 for k, v in means.items() if k != "top-left"), means


def _datalist(root: Path, volumes: list[tuple[np.ndarray, np.ndarray]], spacing: float) -> Path:
    entries = []
    for i, (hu, lab) in enumerate(volumes):
        affine = np.diag([spacing, spacing, spacing if hu.ndim == 3 else 5.0, 1.0])
        for kind, arr in (("image", hu), ("label", lab)):
            path = root / kind / f"case_{i}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, affine), path)
        entries.append(
            {"image": str(root / "image" / f"case_{i}.nii.gz"), "label": str(root / "label" / f"case_{i}.nii.gz")}
        )
    out = root / "datalist.json"
    out.write_text(json.dumps({"training": entries, "validation": entries[:1], "test": []}))
    return out


@pytest.mark.parametrize("name", ["covid_seg_2d", "covid_seg_3d"])
def test_segmenter_validation_images_are_named_and_in_radiological_display(name, tmp_path):
    """A test-preset training on marker slices: TensorBoard holds val/image, val/label, val/prediction (no MONAI
    default tags) and shows the marker where the report's figures put it (figures.show_slice -> ras_to_display)."""
    size = 64 if name == "covid_seg_2d" else 48  # the test presets' image_size: no resampling, no padding
    hu, lab = marker_slice(size)
    if name == "covid_seg_3d":
        depth = 16
        hu, lab = np.repeat(hu[..., None], depth, 2), np.repeat(lab[..., None], depth, 2)
        lab[..., :8][lab[..., :8] == 3] = 1  # the marker slices with the most infection are z >= 8
    spacing = 384.0 / size
    datalist = _datalist(tmp_path / "data", [(hu, lab), (hu.copy(), lab.copy())], spacing)
    bundle = bundles.copy_bundle(name, tmp_path / "bundles")
    tb = tmp_path / "tb"
    values = {"datalist": str(datalist), "tensorboard_dir": str(tb), "max_epochs": 1, "val_interval": 1}
    bundles.run_bundle(bundle, "train", "test", values, in_process=True, threads=1)
    acc = events(tb)
    assert set(acc.Tags()["images"]) == IMAGE_TAGS
    shown = image(acc, "val/image")
    assert shown.shape == (size, size)
    corner_is_top_left(shown, size)
    truth = image(acc, "val/label")
    corner_is_top_left(truth, size)  # infection (class 2) is white; lung (class 1) grey
    want = ras_to_display((lab[..., -1] if lab.ndim == 3 else lab) > 0)
    np.testing.assert_array_equal(truth > 60, want)  # the whole label map, not only the marker
    assert image(acc, "val/prediction").shape == (size, size)
    assert {"train_loss", "learning_rate", "val_mean_dice"} <= set(acc.Tags()["scalars"])


def test_gan_grids_lr_and_hparams(tmp_path):
    """The GAN logs per scale its learning rates and a real | reconstruction | samples grid in the same display as
    the report (the real tile's marker top left), and at the end its config and final losses as hparams."""
    from torch.utils.tensorboard import SummaryWriter

    from cosingan_monai.data.transforms import hu_to_unit
    from cosingan_monai.engines.train_loop import MultiScaleTrainer
    from cosingan_monai.networks import CoSinGANConfig

    size = 40
    hu, lab = marker_slice(size)
    cond = np.stack([(lab >= 1), (lab == 3), (lab >= 0)]).astype(np.float32)
    cfg = CoSinGANConfig(max_size=size, min_size=16, base_channels=8, iters_per_scale=4, aug_bank_size=4, lr_g=4e-4)
    writer = SummaryWriter(str(tmp_path / "tb"))
    trainer = MultiScaleTrainer(
        pair=(hu_to_unit(hu), cond), config=cfg, output_dir=tmp_path / "out", progress=False,
        summary_writer=writer, log_every=1, image_every=0, checkpoint_every=0,
    )  # fmt: skip
    model = trainer.run()
    writer.close()
    acc = events(tmp_path / "tb")
    last = model.num_scales - 1
    assert set(acc.Tags()["images"]) == {f"scale{n}/real_rec_samples" for n in range(model.num_scales)}
    real = image(acc, f"scale{last}/real_rec_samples", "RGB")[:size, :size]  # the first tile: the real slice
    lesion = (real[..., 0] > 200) & (real[..., 1] < 100)  # the red infection outline, drawn around the marker
    rows, cols = np.nonzero(lesion)
    assert lesion.any() and rows.max() < size // 4 and cols.max() < size // 4, (rows, cols)
    assert real[3:6, 3:6].min() > 200 and real[-6:-3, -6:-3].max() < 60  # the bright marker itself, top left
    scalars = set(acc.Tags()["scalars"])
    assert {f"scale{n}/lr_{k}" for n in range(model.num_scales) for k in "gd"} <= scalars
    lr = [e.value for e in acc.Scalars(f"scale{last}/lr_g")]
    assert lr[0] == pytest.approx(4e-4) and lr[-1] == pytest.approx(4e-4 * cfg.lr_gamma)  # the decay is visible
    params = hparams(acc)
    assert params["lr_g"] == pytest.approx(4e-4) and params["max_size"] == size and params["use_body"]
    finals = {t for t in scalars if t.startswith("hparam/")}
    assert finals == {"hparam/final_rec", "hparam/final_loss_g", "hparam/final_loss_d"}
