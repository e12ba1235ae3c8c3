"""Click sub-commands, one module each; `cosingan_monai.cli` registers them lazily so `--help` stays fast."""
