"""`monai-bundle`: the console script MONAI 1.6.1 lacks, a thin front over `python -m monai.bundle`'s commands."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Dispatch `monai-bundle COMMAND ...` to monai.bundle's fire-based entry point, exactly as `python -m` does."""
    import fire
    from monai.bundle import scripts

    commands = {
        "run": scripts.run,
        "run_workflow": scripts.run_workflow,
        "verify_metadata": scripts.verify_metadata,
        "verify_net_in_out": scripts.verify_net_in_out,
        "ckpt_export": scripts.ckpt_export,
        "init_bundle": scripts.init_bundle,
        "download": scripts.download,
        "trt_export": scripts.trt_export,
        "onnx_export": scripts.onnx_export,
    }
    fire.Fire(commands, command=list(sys.argv[1:] if argv is None else argv), name="monai-bundle")


if __name__ == "__main__":
    main()
