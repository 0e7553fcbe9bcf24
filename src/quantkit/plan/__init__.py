"""Planning: which scheme, which layers to leave alone, which KV-cache dtype, whether it fits."""
