"""Proof: the round trip (quantize → validate → load in vLLM → generate → measure) and its report."""
