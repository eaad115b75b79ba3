"""Runtime: where a model runs — devices, the module behind compile and sharding wrappers, ranks — and the
defaults the layers above share."""
