"""benchmarks/k_table.py: one k-table from separate experiment folders, refused when their settings differ."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bench_helpers import load_benchmark

ARMS = ("a_real_k_strong_aug", "b_cosingan", "c_all_real", "d_painted_control")


def _folder(root: Path, k: int, dice: tuple[float, float, float, float], preset: str = "demo") -> Path:
    """A finished single-k experiment's results.json with one infection Dice per arm (2 seeds, equal values)."""
    options = {"dataset": "/data", "test": "None", "preset": preset, "seeds": "2", "strong_aug": "True"}
    options |= {"real_share": "0.25", "sets": "{}", "ks": f"({k},)", "command": f"cosingan-monai experiment --k {k}"}
    paired = {"b - a": {"value": dice[1] - dice[0], "low": 0.05, "high": 0.2, "cases": 20}}
    record = {
        "options": options,
        "results": {arm: {"test_dice_infection": [v, v]} for arm, v in zip(ARMS, dice, strict=True)},
        "per_seed": [],
        "realism": {},
        "wall_s": [600.0, 600.0],
        "paired_all_seeds": paired,
    }
    folder = root / f"k{k}_{preset}"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(record))
    return folder


def test_rows_per_k_with_closure_pairs_and_wall(tmp_path, monkeypatch, capsys):
    k_table = load_benchmark("k_table")
    one = _folder(tmp_path, 1, (0.2, 0.4, 0.6, 0.3))
    four = _folder(tmp_path, 4, (0.3, 0.5, 0.6, 0.5))
    out = tmp_path / "table"
    monkeypatch.setattr(sys, "argv", ["k_table.py", str(four), str(one), "--out", str(out)])
    k_table.main()
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert md.index("\n| 1 | ") < md.index("\n| 4 | ")  # sorted by k
    row1 = next(line for line in md.splitlines() if line.startswith("| 1 | "))
    assert "| 50% | 25% | +0.200 [+0.050, +0.200] | n/a | 20 min |" in row1  # (0.4-0.2)/(0.6-0.2), (0.3-0.2)/0.4
    assert "- k = 4: `cosingan-monai experiment --k 4`" in md
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["4"]["source"]["folder"] == str(four)


def test_folders_of_other_settings_are_refused(tmp_path, monkeypatch):
    k_table = load_benchmark("k_table")
    one = _folder(tmp_path, 1, (0.2, 0.4, 0.6, 0.3))
    other = _folder(tmp_path, 2, (0.2, 0.4, 0.6, 0.3), preset="full")
    monkeypatch.setattr(sys, "argv", ["k_table.py", str(one), str(other), "--out", str(tmp_path / "t")])
    with pytest.raises(SystemExit, match="other preset"):
        k_table.main()
