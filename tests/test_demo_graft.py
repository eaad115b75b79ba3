"""The demo's grafted LLaVA (demo/graft.py): DINOv2-small and SmolLM2-135M-Instruct joined by a trained projector."""

import pathlib

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    not (ROOT / "demo").exists() or not pathlib.Path("/usr/share/datasets/fashion-mnist").exists(),
    reason="needs the demo and Debian's Fashion-MNIST",
)


def test_the_cached_feature_training_is_the_model_run_from_pixels():
    from demo import graft, vit

    proc = graft.processor()
    model = graft.assemble(proc.tokenizer)
    images, labels = vit.fashion_mnist("test")
    images, labels = images[:2], [int(v) for v in labels[:2]]
    ids, mask, targets = graft.encode(proc, labels)
    # What the processor makes of the demo's prompt and caption is what training feeds the decoder.
    made = proc(images=[graft.to_pil(x) for x in images], text=[graft.PROMPT + graft.caption(y) + "<|im_end|>" for y in labels],
                return_tensors="pt")
    assert made["input_ids"].tolist() == ids.tolist()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("model.multi_modal_projector.") for name in trainable)
    with torch.no_grad():
        cached = graft.caption_loss(model, graft.image_features(model, proc, images), ids, mask, targets)
        whole = model(input_ids=ids, attention_mask=mask, pixel_values=made["pixel_values"], labels=targets).loss
    assert abs(float(cached) - float(whole)) < 1e-4


def test_garment_patches_are_the_non_black_pixels():
    from demo import graft

    image = np.zeros((28, 28), np.uint8)
    image[:14, 14:] = 200  # the top-right quarter
    assert graft.garment_patches(image, 4).reshape(4, 4).tolist() == [[False, False, True, True]] * 2 + [[False] * 4] * 2
    assert graft.named_class("a photo of an ankle boot", 9) and not graft.named_class("a photo of a boot", 9)
    assert graft.named_class("a photo of a T-shirt", 0) and not graft.named_class("a photo of a shirt", 0)


def test_demo_graft_logs_its_vision_language_probes_and_answers(tmp_path):
    from demo import graft
    from tests.support.tensorboard import python_provider, read_blob_steps, read_examples

    table = graft.main(tmp_path, steps=2, probe_every=1, train_images=16, eval_images=4, log=lambda *_: None)
    assert [row[0] for row in table] == [0, 1, 2]
    assert all(0 <= row[3] <= 1 and 0 < row[4] < 1 for row in table)
    provider = python_provider(tmp_path)
    assert [d.step for d in read_blob_steps(provider, graft.RUN, graft.TAG)] == [0, 1, 2]
    examples = read_examples(provider, graft.RUN, graft.TAG, 2)
    assert len(examples) == len(graft.PROBE_IMAGES)
    for entry, attention, _ in examples:
        (image,) = entry["images"]
        assert image["size"] == [graft.IMAGE_SIDE, graft.IMAGE_SIDE] and image["pieces"][0]["grid"] == [4, 4]
        span = image["pieces"][0]["span"]
        assert entry["tokens"][span[0]] == "<image>" and span[1] - span[0] == 16
        assert "photo" in "".join(entry["tokens"][span[1]:])  # the caption after the image
        assert attention.attention.shape[0] == 30  # SmolLM2's decoder layers
    answers = read_examples(provider, graft.RUN, graft.ANSWER_TAG, 2)
    assert len(answers) == len(graft.PROBE_IMAGES) and all(entry["generation"]["text"] for entry, _, _ in answers)
    scalars = provider.read_scalars(_context(), experiment_id="", plugin_name="scalars", downsample=100,
                                    run_tag_filter=_filter(graft.RUN, "graft/garment_share"))
    assert [d.step for d in scalars[graft.RUN]["graft/garment_share"]] == [0, 1, 2]
    np.testing.assert_allclose([d.value for d in scalars[graft.RUN]["graft/garment_share"]], [row[3] for row in table],
                               rtol=1e-6)  # stored as float32


def _context():
    from tests.support.tensorboard import request_context

    return request_context()


def _filter(run, tag):
    from tensorboard.data import provider

    return provider.RunTagFilter(runs=[run], tags=[tag])
