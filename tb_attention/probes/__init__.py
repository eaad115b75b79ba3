"""Probes: what a user logs — texts (with spaCy syntax), corpora (analysis), images, audio and the training-health
monitor — each capturing, measuring and writing through the layers below."""
