"""Measuring quality: perplexity on held-out text, greedy agreement between two models."""
