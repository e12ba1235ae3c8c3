"""CoSinGAN training engines: AMP policy, the one-scale MONAI Trainer, handlers and the multi-scale loop."""
