"""The training pair for the cosingan_train bundle: load the case through cosingan_monai.data.io and pick the slice.

Stock MONAI cannot do these: the case loader validates NIfTI/DICOM/PNG input (HU or 0-255 windowed, label
conventions) with clear errors, and "auto" slice choice needs the project's select_slices. They live in the package
(not in bundle scripts/) so ConfigWorkflow.check_properties and MONAI Label can build the config before `run`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from cosingan_monai.data.cases import label_map
from cosingan_monai.data.io import find_label, load_case
from cosingan_monai.data.lungmask import auto_lung_mask
from cosingan_monai.data.transforms import SelectSlicesd, take_slice


class LoadCased(MapTransform):
    """{"image": path, "label": path|None} -> image HU (x, y, z) MetaTensor and label map (x, y, z), RAS.

    A missing label is looked up beside the image (data.io.find_label); none found -> automatic lungs, no infection.
    """

    def __init__(self, keys: KeysCollection = ("image", "label"), allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_path = d["image"]
        label_path = d.get("label") or find_label(image_path)
        case = load_case(image_path, label_path)
        affine = torch.as_tensor(case.affine, dtype=torch.float64)
        hu = case.hu()
        label = label_map(case)
        if label is None:
            label = auto_lung_mask(hu, case.spacing)
        d["image"] = MetaTensor(torch.as_tensor(np.asarray(hu, np.float32)), affine=affine)
        d["label"] = MetaTensor(torch.as_tensor(np.asarray(label, np.uint8)), affine=affine.clone())
        d["case_path"], d["label_path"] = str(image_path), str(label_path) if label_path else None
        return d


class PickSliced(MapTransform):
    """Keep one axial slice of the 3D keys: an int index, or "auto" (select_slices: infected and healthy lung)."""

    def __init__(
        self, keys: KeysCollection = ("image", "label"), slice: int | str = "auto", label_key: str = "label"
    ) -> None:
        super().__init__(keys)
        if not (slice == "auto" or isinstance(slice, int)):
            raise ValueError(f"slice must be an int or 'auto', got {slice!r}")
        self.slice, self.label_key = slice, label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.slice == "auto":
            return SelectSlicesd(self.keys, k=1, label_key=self.label_key)(d)
        depth = d[self.label_key].shape[-1]
        z = int(self.slice) if int(self.slice) >= 0 else depth + int(self.slice)
        if not 0 <= z < depth:
            raise ValueError(f"{d.get('case_path', 'case')}: slice {self.slice} is outside 0..{depth - 1}")
        for key in self.key_iterator(d):
            d[key] = take_slice(d[key], z)
        d["slice_index"] = z
        return d
