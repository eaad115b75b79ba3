"""Writes fixtures/rollout.json: attention and the rollouts tb_attention.probes.vision.rollout computes from it."""

# Run from the repository root: python frontend/test/make_rollout_fixture.py. The TypeScript rollout
# of the image view is tested against these numbers (float64, tolerance ~1e-9): one input
# attention [L, H, N, N] and, per case (head_fusion, discard_ratio, heads), the rollout through each
# layer [L, N, N]. "definition" states the computation in words.

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from tb_attention.probes import vision  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "fixtures" / "rollout.json"


def main():
    OUT.write_text(json.dumps(vision.rollout_fixture(), separators=(",", ":")) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
