"""One k-table from several finished `cosingan-monai experiment` runs (each one or more --k), as the experiment
itself writes it for `--k 1 --k 2 --k 4` in one folder: arms' infection Dice per k, gap closures, the paired
differences b - a and b - d over all seeds, and the wall time per k.

Why: runs made at different times (k = 1 first, k = 4 later) each hold their own folder; rerunning them as one
`--k 1 --k 2 --k 4` run would retrain every arm. The runs must share dataset, preset, seeds and augmentation, which
this checks.

Run:  python benchmarks/k_table.py runs/exp_k1_floor runs/exp_k2_floor runs/exp_k4_floor \
          --out benchmarks/results/experiment/medseg_k124_floor
(writes OUT.md and OUT.json; rerun `experiment ... --resume` on an older folder first if its results.json has no
`paired_all_seeds`).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosingan_monai.core.files import read_json, write_json  # noqa: E402
from cosingan_monai.pipeline.experiment import ExperimentOptions, KResults, k_table  # noqa: E402

#: options that must agree for rows of one table to compare
SHARED = ("dataset", "test", "preset", "seeds", "strong_aug", "real_share", "sets")


def k_results(folder: Path) -> tuple[dict[str, str], list[KResults]]:
    """The options and one KResults per k of an experiment folder's results.json."""
    record = read_json(folder / "results.json")
    options = record["options"]
    by_k = record["k"] if "k" in record else {str(ast.literal_eval(options["ks"])[0]): record}
    rows = []
    for k, r in by_k.items():
        if "paired_all_seeds" not in r:
            raise SystemExit(f"{folder}/results.json has no paired differences: rerun its experiment with --resume")
        rows.append(
            KResults(
                int(k), r["results"], r["per_seed"], r["realism"], r["wall_s"], paired_all_seeds=r["paired_all_seeds"]
            )
        )
    return options, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path, help="OUT.md and OUT.json are written")
    args = parser.parse_args()
    sweep: dict[int, KResults] = {}
    first: dict[str, str] | None = None
    sources: dict[int, dict[str, Any]] = {}
    for folder in args.folders:
        options, rows = k_results(folder)
        first = first or options
        differ = [key for key in SHARED if options.get(key) != first.get(key)]
        if differ:
            raise SystemExit(f"{folder}: other {', '.join(differ)} than {args.folders[0]}; not one table")
        for kr in rows:
            if kr.k in sweep:
                raise SystemExit(f"{folder}: k = {kr.k} is already given by another folder")
            sweep[kr.k] = kr
            sources[kr.k] = {"folder": str(folder), "command": options["command"]}
    assert first is not None
    opts = ExperimentOptions(
        dataset=Path(first["dataset"]),
        out=args.out,
        preset=first["preset"],
        seeds=int(first["seeds"]),
        strong_aug=first["strong_aug"] == "True",
    )
    table = k_table([sweep[k] for k in sorted(sweep)], opts)
    commands = "\n".join(f"- k = {k}: `{sources[k]['command']}`" for k in sorted(sweep))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(f"{table}\n\nRuns:\n\n{commands}\n", encoding="utf-8")
    write_json(
        args.out.with_suffix(".json"),
        {
            str(k): {
                "source": sources[k],
                "results": kr.results,
                "per_seed": kr.per_seed,
                "paired_all_seeds": kr.paired_all_seeds,
                "wall_s": kr.wall_s,
            }
            for k, kr in sorted(sweep.items())
        },  # fmt: skip
        indent=1,
    )
    print(table)


if __name__ == "__main__":
    main()
