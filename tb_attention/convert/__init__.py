"""Converters from the foreign formats real pretrained weights ship in to transformers folders."""

# Each converter is a module with `convert(out_dir) -> pathlib.Path` and a cached `*_dir()` that
# converts once under assets.cache_dir(); `python -m tb_attention.convert NAME OUT` runs one.
