"""The verbs the CLI wraps, one module each: `train`, `predict`, `evaluate` (and `export.merge`)."""
