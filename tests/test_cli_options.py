"""One name, one meaning: the shared options on every command that runs a bundle, and choice lists for presets."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from cosingan_monai.cli import main
from cosingan_monai.core.constants import PRESETS
from cosingan_monai.pipeline.pipeline import PipelineOptions

BUNDLE_COMMANDS = ("pipeline", "train-gan", "sample", "train-seg", "train-cls")


def _params(name: str) -> dict[str, click.Parameter]:
    command = main.get_command(click.Context(main), name)
    return {opt: p for p in command.params for opt in p.opts}


@pytest.mark.parametrize("name", BUNDLE_COMMANDS)
def test_bundle_commands_share_seed_threads_device_set(name):
    params = _params(name)
    for opt in ("--seed", "--threads", "--device", "--set", "--out", "--preset"):
        assert opt in params, (name, opt)
        assert params[opt].help, (name, opt)
    assert params["--set"].multiple and list(params["--device"].type.choices) == ["cpu", "cuda"]
    assert list(params["--preset"].type.choices) == list(PRESETS)
    assert params["--seed"].help == _params("pipeline")["--seed"].help  # the same text everywhere


@pytest.mark.parametrize("name", (*BUNDLE_COMMANDS, "experiment", "datalist", "phantom", "label-app"))
def test_out_is_required_everywhere(name):
    """--out has one meaning (where the command writes) and no default anywhere: nothing lands in a surprise folder."""
    assert _params(name)["--out"].required, name


def test_experiment_takes_threads_device_set_and_passes_them_on():
    """The experiment runs bundles too: --threads, --device and --set as in the pipeline ("BUNDLE:ID" for one)."""
    from cosingan_monai.pipeline.experiment import ExperimentOptions

    params = _params("experiment")
    for opt in ("--threads", "--device", "--set"):
        assert params[opt].help == _params("pipeline")[opt].help, opt
    opts = ExperimentOptions(
        dataset=Path("."), out=Path("."), device="cpu", sets={"max_epochs": 2, "cosingan_train:x": 1}
    )
    assert opts.overrides_for("covid_seg_2d") == {"device": "$torch.device('cpu')", "max_epochs": 2}
    assert opts.overrides_for("cosingan_train") == {"device": "$torch.device('cpu')", "max_epochs": 2, "x": 1}


def test_label_app_preset_is_a_choice():
    assert list(_params("label-app")["--preset"].type.choices) == ["auto", *PRESETS]


def test_pipeline_and_experiment_default_to_the_same_augmentation_and_real_share():
    from cosingan_monai.pipeline.experiment import ExperimentOptions
    from cosingan_monai.pipeline.pipeline import PipelineOptions

    for opt in ("--strong-aug", "--real-share"):
        assert _params("pipeline")[opt].default == _params("experiment")[opt].default, opt
        assert _params("pipeline")[opt].help == _params("experiment")[opt].help, opt
    assert _params("pipeline")["--strong-aug"].default is True
    defaults = PipelineOptions(case=Path(".")), ExperimentOptions(dataset=Path("."), out=Path("."))
    for o in defaults:  # the Python API defaults are the CLI's
        assert (o.strong_aug, o.real_share) == (True, _params("pipeline")["--real-share"].default)


def test_pipeline_volume_warp_defaults_to_the_case_anatomy_and_is_bounded():
    from click.testing import CliRunner

    from cosingan_monai.cli import main
    from cosingan_monai.pipeline.pipeline import PipelineOptions

    assert _params("pipeline")["--volume-warp"].default == PipelineOptions(case=Path(".")).volume_warp == 0.0
    result = CliRunner().invoke(main, ["pipeline", "--case", ".", "--out", "x", "--volume-warp", "3"])
    assert result.exit_code == 2 and "--volume-warp" in result.output and "0<=x<=2" in result.output


def test_pipeline_set_reaches_every_bundle_or_one():
    opts = PipelineOptions(case=Path("c.nii.gz"), preset="test", device="cpu")
    opts.sets = {"max_epochs": 3, "covid_seg_3d:image_size": 32}
    assert opts.overrides_for("covid_seg_3d") == {"device": "$torch.device('cpu')", "max_epochs": 3, "image_size": 32}
    assert opts.overrides_for("covid_seg_2d") == {"device": "$torch.device('cpu')", "max_epochs": 3}


def test_train_gan_refuses_an_existing_training_without_resume_or_force(tmp_path):
    """train-gan takes --resume / --force as pipeline and experiment do: an existing training is never silently
    continued or replaced."""
    from click.testing import CliRunner

    from cosingan_monai.phantom.generator import write_phantom_dataset

    image, _ = write_phantom_dataset(tmp_path / "ph", cases=1, seed=0, size=32, slices=4, healthy_fraction=0.0)[0]
    out = tmp_path / "gan"
    model = out / "bundles" / "cosingan_train" / "models" / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"earlier training")
    args = ["train-gan", "--case", str(image), "--preset", "test", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "--resume" in result.output and "--force" in result.output
    result = CliRunner().invoke(main, [*args, "--resume", "--force"])
    assert result.exit_code == 2 and "exclude" in result.output
    assert model.read_bytes() == b"earlier training"
    for opt in ("--resume", "--force"):
        assert _params("train-gan")[opt].is_flag and _params("pipeline")[opt].is_flag


def test_sample_lesion_density_spread_is_a_fraction_of_the_trained_range(tmp_path):
    """--lesion-density-spread takes [0, 1] of the range the GAN trained on; anything else is refused by name."""
    from click.testing import CliRunner

    model = tmp_path / "model.pt"
    model.write_bytes(b"not read: the option is checked first")
    result = CliRunner().invoke(
        main, ["sample", "--model", str(model), "--out", str(tmp_path / "o"), "--lesion-density-spread", "1.5"]
    )
    assert result.exit_code == 2 and "--lesion-density-spread" in result.output and "1.5" in result.output
    assert _params("sample")["--lesion-density-spread"].help
