"""Whether trained 2D segmenters miss infection or over-call it: pooled pixel precision and recall on held-out slices.

A mean Dice alone cannot tell a conservative segmenter (precise, low recall) from an eager one (many false
positives). For each trained covid_seg_2d bundle this runs the bundle's own validation preprocessing and network on
every held-out slice of a datalist ("test" split), and pools the infection true positives, false positives and
false negatives over all pixels (on the bundle's grid), plus the false-positive pixels on slices without infection.
Writes JSON with `--out`.

Run:  .venv/bin/python benchmarks/segmenter_errors.py --eval RUN/data/eval/eval_datalist.json \
          RUN/bundles/covid_seg_2d RUN/bundles/covid_seg_2d_baseline [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosingan_monai.core.files import atomic_write_path  # noqa: E402

#: Infection's class index in the covid_seg_2d output (background, lung, infection).
INFECTION_CLASS = 2


def pooled_counts(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """(prediction, truth) class maps -> pooled infection TP/FP/FN, precision, recall, Dice and healthy-slice FPs."""
    tp = fp = fn = fp_healthy = 0
    for pred, truth in pairs:
        p, t = np.asarray(pred) == INFECTION_CLASS, np.asarray(truth) == INFECTION_CLASS
        tp += int((p & t).sum())
        fp += int((p & ~t).sum())
        fn += int((~p & t).sum())
        fp_healthy += 0 if t.any() else int(p.sum())

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "fp_on_slices_without_infection": fp_healthy,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "pooled_dice": ratio(2 * tp, 2 * tp + fp + fn),
    }


def predictions(bundle: Path, eval_list: Path) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """(prediction, truth) class maps of a trained covid_seg_2d bundle on the test split, on the bundle's grid."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def")
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
    net.eval()
    preprocess = parser.get_parsed_content("validate#preprocessing")
    base = eval_list.parent
    for entry in json.loads(eval_list.read_text(encoding="utf-8"))["test"]:
        item = {k: str(Path(entry[k]) if Path(entry[k]).is_absolute() else base / entry[k]) for k in ("image", "label")}
        data = preprocess(item)
        data = data[0] if isinstance(data, list) else data
        with torch.no_grad():
            pred = net(torch.as_tensor(data["image"])[None]).argmax(1)[0].numpy()
        yield pred, np.asarray(data["label"])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="trained covid_seg_2d bundle folders")
    parser.add_argument("--eval", type=Path, required=True, help="held-out datalist with a 'test' split")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {"eval": str(args.eval), "bundles": {}}
    for bundle in args.bundles:
        result["bundles"][str(bundle)] = counts = pooled_counts(predictions(bundle, args.eval))
        print(f"{bundle}: precision {counts['precision']}, recall {counts['recall']}, Dice {counts['pooled_dice']}")
    if args.out:
        with atomic_write_path(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
