"""Training (Lightning), evaluation and checkpoint loading."""
