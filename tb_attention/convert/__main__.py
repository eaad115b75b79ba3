"""`python -m tb_attention.convert {dinov2,whisper} OUT`: converts a packaged pretrained model to a transformers folder."""

import argparse
import importlib
import sys
import time

CONVERTERS = ("dinov2", "whisper")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tb_attention.convert", description=__doc__)
    parser.add_argument("model", choices=CONVERTERS, help="which packaged model to convert")
    parser.add_argument("out", help="folder to write (created; files in it are overwritten)")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"tb_attention.convert.{args.model}")
    start = time.perf_counter()
    path = module.convert(out_dir=args.out)
    print(f"{args.model}: wrote {path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
