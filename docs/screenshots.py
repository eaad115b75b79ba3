"""Screenshots of every view of the real dashboard on the demo logdir, for the README.

    python docs/screenshots.py [--logdir demo_output/logdir] [--out docs/screenshots]

Starts `tensorboard --logdir` on 127.0.0.1, opens each view by its deep link in Debian's
Chromium (Playwright) and saves one PNG per view.
"""

import argparse
import pathlib
import sys
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.tensorboard import TensorBoard  # noqa: E402

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]

# (file name, dashboard state): the deep-link keys of BUILD.md, without the p.attention. prefix.
VIEWS = [
    ("head_view", {"run": "train", "tag": "probe", "view": "head", "example": "0", "layer": "0", "heads": "1",
                   "tokens": "9"}),
    ("model_view", {"run": "train", "tag": "probe", "view": "model", "example": "4"}),
    ("neuron_view", {"run": "train", "tag": "probe", "view": "neuron", "example": "0", "layer": "0", "heads": "1",
                     "tokens": "9"}),
    ("metrics_view", {"run": "train", "tag": "probe", "view": "metrics", "metric": "previous_token",
                      "picks": "0.1,0.0"}),
    ("analysis_view", {"run": "smollm2-135m", "tag": "corpus", "view": "analysis"}),
    ("exemplars_view", {"run": "smollm2-135m", "tag": "corpus", "view": "exemplars", "layer": "16", "heads": "0"}),
    ("compare_view", {"run": "checkpoint-0", "tag": "probe", "view": "compare", "b_run": "checkpoint-1200",
                      "example": "0", "layer": "0"}),
    ("health_panel", {"run": "train", "tag": "attention_health", "view": "health"}),
    ("image_view", {"run": "dinov2-small", "tag": "photos", "view": "image", "example": "0", "layer": "9"}),
    ("cross_attention", {"run": "whisper-tiny-en", "tag": "speech", "view": "head", "example": "0",
                         "group": "cross", "layer": "2"}),
    # SmolLM2-135M-Instruct's third answer at its 9th token ("Neptune"), the mean of every head as heat.
    ("generation_view", {"run": "smollm2-chat", "tag": "generation", "view": "generation", "example": "2",
                         "gtoken": "8"}),
]


def deep_link(base, state):
    return base + "/#attention&" + urllib.parse.urlencode({f"p.attention.{k}": v for k, v in state.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default=str(ROOT / "demo_output" / "logdir"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=860)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="take only these screenshots (file names above)")
    args = parser.parse_args()
    views = [(name, state) for name, state in VIEWS if not args.only or name in args.only]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    server = TensorBoard(args.logdir)
    try:
        server.wait_for(lambda tags: all(state["run"] in tags for _, state in views))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            for name, state in views:
                page.goto("about:blank")
                page.goto(deep_link(server.url, state))
                page.wait_for_timeout(4000)  # the tab loads, fetches and draws
                path = out / f"{name}.png"
                page.screenshot(path=str(path))
                print(path)
            browser.close()
    finally:
        server.close()


if __name__ == "__main__":
    main()
