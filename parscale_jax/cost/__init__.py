"""Inference cost (roofline model, devices) and planning under budgets."""

# How the prefix is costed: "prompt" (as extra prompt tokens per stream: the paper's accounting,
# and a generic cost tool's) or "cache" (as this implementation runs it: prefix keys/values held
# in the KV cache, attended to, never computed). One default for `cost`, `plan` and Workload.
PREFIX_MODES = ("prompt", "cache")
DEFAULT_PREFIX_MODE = "prompt"
