"""Mixed-precision policy: bf16 autocast on CUDA where supported, else fp16 + GradScaler; float32 on CPU."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AmpPolicy:
    """What autocast does on one device; `scaler()` gives a GradScaler only for fp16 (bf16 needs none)."""

    device_type: str
    dtype: torch.dtype | None  # None = float32, autocast off

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """An autocast context for this policy (a no-op context when disabled)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 on CUDA, else None."""
        if self.dtype == torch.float16 and self.device_type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None


def amp_policy(device: torch.device | str, enabled: bool = True) -> AmpPolicy:
    """Pick the policy for `device`: CUDA -> bf16 if supported else fp16; anything else -> float32."""
    dev = torch.device(device)
    if not enabled or dev.type != "cuda" or not torch.cuda.is_available():
        return AmpPolicy(dev.type, None)
    bf16 = torch.cuda.is_bf16_supported()
    return AmpPolicy("cuda", torch.bfloat16 if bf16 else torch.float16)
