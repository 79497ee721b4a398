"""hpcgpu: one YAML spec, one worker entry point, for multi-GPU PyTorch training."""

__version__ = "0.1.0"
