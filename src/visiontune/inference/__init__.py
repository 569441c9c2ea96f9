"""Model-running helpers beyond plain generation (class scoring)."""
