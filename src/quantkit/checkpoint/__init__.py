"""Writing checkpoints safely and reading them cheaply (config and safetensors headers only)."""

#: the manifest quantkit writes into every checkpoint it publishes (scheme, backend, versions, notes)
MANIFEST = "quantkit.json"
