"""Storage: the contract between writers and readers, torch-free — the schema (plugin data, tags, manifest,
metric names), the blob codecs, example encoding, the TF-free summary writers and the record checksum."""
