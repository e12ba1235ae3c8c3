"""The project's fixed vocabulary in one place: label values, HU windows and preset names (docs/design.md)."""

from __future__ import annotations

#: COVID-19-CT-Seg label values, the internal label convention (CONVENTIONS.md).
BACKGROUND, LEFT_LUNG, RIGHT_LUNG, INFECTION = 0, 1, 2, 3
#: MedSeg-style infection-only masks use this value for infection (lungs are then found automatically).
INFECTION_ONLY = 1

#: Windowed 0-255 exports (Radiopaedia, MedSeg) map linearly onto this HU window; it is also the network window
#: ([-1250, 250] HU -> [-1, 1]) and the lung display window of the figures.
WINDOW_HU: tuple[float, float] = (-1250.0, 250.0)

#: Bundle presets: `test` (seconds), `demo` (2 CPU cores, minutes), `full` (the paper's 512 px scale).
PRESETS: tuple[str, ...] = ("test", "demo", "full")
