"""The `cosingan-monai` command line: a click group whose sub-commands live in `cosingan_monai.commands`."""

from __future__ import annotations

import importlib

import click

from cosingan_monai.core.errors import BundleError, failure_message

# sub-command name -> "module:attribute"; imported only when that command runs, so `--help` needs no torch import.
COMMANDS: dict[str, str] = {
    "phantom": "cosingan_monai.commands.phantom:phantom",
    "inspect": "cosingan_monai.commands.inspect:inspect_case",
    "datalist": "cosingan_monai.commands.datalist:datalist",
    "label-app": "cosingan_monai.commands.label_app:label_app",
    "pipeline": "cosingan_monai.commands.pipeline:pipeline",
    "experiment": "cosingan_monai.commands.experiment:experiment",
    "train-cls": "cosingan_monai.commands.train_cls:train_cls",
    "train-seg": "cosingan_monai.commands.train_seg:train_seg",
    "train-gan": "cosingan_monai.commands.train_gan:train_gan",
    "sample": "cosingan_monai.commands.sample:sample",
    "realism": "cosingan_monai.commands.realism:realism",
}


class LazyGroup(click.Group):
    """A click group that imports each sub-command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def invoke(self, ctx: click.Context) -> object:
        """Run the sub-command; a full disk anywhere below ends in one line, `no space left on device: PATH`, and a
        failed bundle run in one line naming the bundle, the workflow, the cause from its log and the log."""
        try:
            return super().invoke(ctx)
        except (OSError, BundleError) as exc:
            message = failure_message(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cosingan-monai")
def main() -> None:
    """CoSinGAN on MONAI: learn COVID-19 CT lung and infection segmentation from a single annotated slice."""


if __name__ == "__main__":
    main()
