"""Defaults shared by the analysis, the probe and the `tb-attention` command line.

Torch-free and import-free, so that `tb-attention --help` can show them without loading torch.
"""

PROBE_TAG = "probe"  # tag of a probe logged during training or from a checkpoint
CORPUS_TAG = "corpus"  # tag of a corpus analysis

BATCH_SIZE = 16  # sentences per forward pass of the corpus analysis
MAX_LENGTH = 128  # tokens per sentence of the corpus analysis; longer ones are truncated
SAMPLE = 8  # sentences whose attention the corpus analysis stores for the single-example views
EXEMPLAR_EXAMPLES = 16  # exemplar sentences whose attention the corpus analysis stores too
TOP_K_EXEMPLARS = 5  # inputs kept per head as its exemplars
