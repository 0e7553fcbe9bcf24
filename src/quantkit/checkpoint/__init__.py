"""Writing checkpoints safely and reading them cheaply (config and safetensors headers only)."""
