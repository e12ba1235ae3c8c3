"""Layer 1, used by every other layer: constants (labels, HU windows, presets), atomic file/JSON helpers, AMP."""
