"""Layer 7, MONAI Label: build an app folder that serves a run's segmenters (the server template is package data)."""
