"""Planning (package name avoids shadowing `quantkit.plan()`): which scheme, which layers to leave alone, which KV-cache dtype, whether it fits."""
