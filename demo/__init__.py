"""The tb-attention demo: `python -m demo` (see demo/run.sh)."""
