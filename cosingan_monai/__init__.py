"""cosingan-monai: CoSinGAN on MONAI, learning COVID-19 CT lung and infection diagnosis from one annotated slice."""

__version__ = "0.1.0"
