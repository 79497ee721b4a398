"""Bundled demo tasks: `mlp` (the default, seconds on 2 CPU ranks) and `gpt` (a tiny character GPT)."""
