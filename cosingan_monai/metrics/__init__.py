"""Layer 3, measurements on images and label maps: weight-free realism metrics of synthetic CT against real CT."""
