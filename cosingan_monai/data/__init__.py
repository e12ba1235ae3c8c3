"""Layer 2, data handling: case I/O and validation, MONAI transforms, classical lung masks, conditions, datalists."""
