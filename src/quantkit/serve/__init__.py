"""Serving: ``load()`` a checkpoint into a configured ``vllm.LLM``, in this environment or the serve one."""
