"""covid_slice_classifier's network, as its bundle config builds it: a stock MONAI U-Net maps background, lung and
infection per pixel (what training sees), a stock torch readout turns the map into slice logits (what validation and
inference see)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "covid_slice_classifier" / "configs"


def _parsed(preset: str = "test") -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update(ConfigParser.load_config_file(str(CONFIGS / "presets" / f"{preset}.json")))
    parser["device"] = "$torch.device('cpu')"
    return parser


def test_training_sees_the_map_and_evaluation_the_slice_logits():
    parser = _parsed()
    network, trained = parser.get_parsed_content("network"), parser.get_parsed_content("train#network")
    assert trained is network[0]  # one set of weights: the trainer's map network is the classifier's first part
    x = torch.randn(3, 1, 64, 64)
    assert trained.train()(x).shape == (3, 3, 64, 64)
    network.eval()
    logits = network(x)
    assert logits.shape == (3, 2) and torch.allclose(logits[:, 0], torch.full((3,), math.log(0.5)))
    with torch.no_grad():  # the readout: the largest 5x5 mean of log p(infection), channel 2 of the map's softmax
        log_p = torch.log_softmax(network[0](x), dim=1)[:, 2:3]
        expected = F.avg_pool2d(log_p, 5, stride=1, padding=2, count_include_pad=False).amax(dim=(1, 2, 3))
    assert torch.allclose(logits[:, 1], expected, atol=1e-5)
    assert torch.all(logits[:, 1] <= 0)  # a mean log-probability; "infection" wins where it exceeds log 0.5
    assert torch.allclose(torch.jit.script(network).eval()(x), logits, atol=1e-5)  # what ckpt_export does


def test_mask_training_separates_slices_with_and_without_a_bright_blob():
    """The bundle's network and loss, 80 steps on 3-class masks (background, lung, infection blob): every blob slice
    scores above every blank one, and the decision threshold (log 0.5) splits them."""
    torch.manual_seed(0)
    parser = _parsed()
    network, loss = parser.get_parsed_content("network"), parser.get_parsed_content("loss")
    opt = torch.optim.Adam(network.parameters(), lr=3e-3)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = torch.zeros(n, 1, 32, 32)
        mask[:, :, 2:30, 2:30] = 1  # "lung": a dim square on every slice
        has = torch.arange(n) % 2 == 0
        for i in torch.nonzero(has).flatten().tolist():
            r, c = torch.randint(4, 24, (2,)).tolist()
            mask[i, 0, r : r + 5, c : c + 5] = 2
        return 0.2 * torch.randn(n, 1, 32, 32) + 0.75 * mask, mask, has

    for _ in range(80):
        x, mask, _ = batch(8)
        opt.zero_grad()
        loss(network[0].train()(x), mask).backward()
        opt.step()
    x, _, has = batch(16)
    with torch.no_grad():
        score = network.eval()(x)[:, 1]
    assert score[has].min() > score[~has].max()
    assert score[has].min() > math.log(0.5) > score[~has].max()


@pytest.mark.parametrize("preset", ["test", "demo", "full"])
def test_every_preset_builds_the_same_kind_of_network(preset):
    network = _parsed(preset).get_parsed_content("network")
    assert type(network[0]).__name__ == "UNet" and network[0].out_channels == 3


SEG_CONFIGS = CONFIGS.parents[1] / "covid_seg_2d" / "configs"


def _segmenter(preset: str) -> torch.nn.Module:
    """covid_seg_2d's U-Net as its train config and preset build it, freshly initialised."""
    parser = ConfigParser()
    parser.read_config(str(SEG_CONFIGS / "train.json"))
    parser.update(ConfigParser.load_config_file(str(SEG_CONFIGS / "presets" / f"{preset}.json")))
    parser["device"] = "$torch.device('cpu')"
    return parser.get_parsed_content("network_def")


@pytest.mark.parametrize("preset", ["test", "demo", "full"])
def test_pretrained_map_loads_the_2d_segmenter_of_the_same_preset(preset, tmp_path):
    """The pipeline starts the classifier from its 2D segmenter: in every preset the weights load strictly, and the
    classifier's map is then the segmenter's output."""
    torch.manual_seed(1)
    segmenter = _segmenter(preset).eval()
    torch.save(segmenter.state_dict(), tmp_path / "model.pt")
    parser = _parsed(preset)
    parser["pretrained_map"] = str(tmp_path / "model.pt")
    parser.get_parsed_content("initialize")  # what `monai.bundle run` does before `run`
    network = parser.get_parsed_content("network").eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(network[0](x), segmenter(x))


def test_pretrained_map_of_another_width_fails_naming_the_mismatch(tmp_path):
    torch.save(_segmenter("test").state_dict(), tmp_path / "model.pt")  # 8-128 channels
    parser = _parsed("demo")  # 16-256 channels
    parser["pretrained_map"] = str(tmp_path / "model.pt")
    with pytest.raises(RuntimeError, match="load_state_dict") as caught:
        parser.get_parsed_content("initialize")
    assert "size mismatch" in str(caught.value.__cause__)  # torch's message, chained in the bundle's traceback
