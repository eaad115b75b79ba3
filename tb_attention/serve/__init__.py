"""Serving: the TensorBoard tower — the entry point (loader), the plugin's routes and the reader behind them.
Imports `storage/` only: never torch, transformers or spaCy."""
