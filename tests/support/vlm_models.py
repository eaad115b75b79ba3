"""Tiny random vision-language models with their own processors, built offline, and their eager reference.

The processors are transformers' own classes, built in code: GPT-2's tokenizer (from the npm package,
tb_attention.convert.assets) with the family's image tokens added, and the family's image processor on
its PIL backend (no torchvision here). Qwen2-VL's processor also wants a video processor, which needs
torchvision: `Qwen2VLImages` is the same processor told that it has none (it never uses it for images).
"""

import numpy as np
import torch
import transformers as T

from tb_attention.convert import assets

FAMILIES = ("llava", "qwen2_vl", "paligemma", "idefics3")
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
PATCH = 8  # pixels per patch side in every family's vision tower


def tokenizer(extra):
    t = T.GPT2TokenizerFast.from_pretrained(str(assets.gpt2_tokenizer_dir()))
    t.add_special_tokens({"additional_special_tokens": list(extra)})
    t.pad_token = t.eos_token
    return t


class Qwen2VLImages(T.Qwen2VLProcessor):
    """Qwen2VLProcessor without a video processor (its class needs torchvision)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def processor(family):
    """The family's processor: images of 32 x 32 pixels for LLaVA and PaliGemma (4 x 4 patches), Qwen2-VL at
    the image's own resolution (sides multiples of 16), Idefics3 in 32-pixel tiles (sides up to 64)."""
    if family == "llava":
        images = T.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        return T.LlavaProcessor(image_processor=images, tokenizer=tokenizer(["<image>"]), patch_size=PATCH,
                                vision_feature_select_strategy="default", num_additional_image_tokens=1)
    if family == "paligemma":
        images = T.SiglipImageProcessorPil(size={"height": 32, "width": 32})
        images.image_seq_length = 16
        return T.PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer(["<image>"]))
    if family == "qwen2_vl":
        images = T.Qwen2VLImageProcessorPil(min_pixels=16 * 16, max_pixels=64 * 64, patch_size=PATCH, merge_size=2)
        return Qwen2VLImages(image_processor=images, tokenizer=tokenizer(
            ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"]))
    if family == "idefics3":
        images = T.Idefics3ImageProcessorPil(do_image_splitting=True, size={"longest_edge": 64},
                                             max_image_size={"longest_edge": 32})
        return T.Idefics3Processor(image_processor=images, image_seq_len=4, tokenizer=tokenizer(
            ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]))
    raise ValueError(family)


def model(family, proc, seed=0):
    """A tiny random model of the family whose vocabulary and image token match `proc`'s tokenizer."""
    tk = proc.tokenizer
    ids = tk.convert_tokens_to_ids
    text = dict(vocab_size=len(tk), num_key_value_heads=2, bos_token_id=tk.bos_token_id, eos_token_id=tk.eos_token_id,
                pad_token_id=tk.eos_token_id, **SMALL)
    vision = dict(image_size=32, patch_size=PATCH, **SMALL)
    torch.manual_seed(seed)
    if family == "llava":
        config = T.LlavaConfig(vision_config=T.CLIPVisionConfig(**vision), text_config=T.LlamaConfig(**text),
                               image_token_index=ids("<image>"))
        return T.LlavaForConditionalGeneration(config).eval()
    if family == "paligemma":
        config = T.PaliGemmaConfig(vision_config=dict(model_type="siglip_vision_model", **vision),
                                   text_config=dict(model_type="gemma", head_dim=8, **text),
                                   image_token_index=ids("<image>"), projection_dim=32)
        return T.PaliGemmaForConditionalGeneration(config).eval()
    if family == "qwen2_vl":
        config = T.Qwen2VLConfig(
            vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, patch_size=PATCH, spatial_merge_size=2),
            text_config=dict(rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}, **text),
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
        )
        return T.Qwen2VLForConditionalGeneration(config).eval()
    if family == "idefics3":
        config = T.Idefics3Config(vision_config=vision, text_config=dict(model_type="llama", **text),
                                  image_token_id=ids("<image>"), scale_factor=2)
        return T.Idefics3ForConditionalGeneration(config).eval()
    raise ValueError(family)


def image(height, width, seed=0):
    """A PIL RGB image of random colours."""
    from PIL import Image

    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8))


def image_size(family):
    """(height, width) of a test image each family's processor takes as it is (no resize or crop)."""
    return {"llava": (32, 32), "paligemma": (32, 32), "qwen2_vl": (32, 48), "idefics3": (64, 64)}[family]


def processed(proc, images, text):
    """The processor's inputs for one (images, text), as the probe makes them (batch of one)."""
    nested = isinstance(proc, T.Idefics3Processor)
    return dict(proc(images=[images] if nested else images, text=[text], return_tensors="pt"))


def eager_attention(vlm, inputs):
    """[L, H, N, N]: the decoder's attention as the model returns it with eager attention and output_attentions."""
    vlm.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = vlm(**{k: v for k, v in inputs.items() if k != "labels"}, output_attentions=True)
    finally:
        vlm.set_attn_implementation("sdpa")
    return torch.stack(out.attentions)[:, 0]


def decoder_inputs_embeds(vlm, inputs):
    """[N, D]: what the decoder reads at each position (image features placed at the image tokens)."""
    seen = {}
    decoder = vlm.get_decoder()

    def keep(_, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"][0].detach().clone()

    hook = decoder.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with torch.no_grad():
            vlm(**{k: v for k, v in inputs.items() if k != "labels"})
    finally:
        hook.remove()
    return seen["embeds"]
