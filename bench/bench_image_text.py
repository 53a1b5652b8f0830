"""Image-text decoders (LLaVA, LLaVA-NeXT, Gemma 3 with images, Qwen2-VL), forgegrad vs transformers, one thread
pinned on both sides: the prefill of a prompt holding one image (vision tower, projector, the decoder over the
prompt) and greedy generate.

    PYTHONPATH=python python bench/bench_image_text.py [--models llava,llava_next,gemma3,qwen2_vl --new 16 --rounds 3]

Randomly initialised models saved by transformers and loaded by forgegrad's from_pretrained: a CLIP ViT-B/16 tower
at 224 px (LLaVA: the second-to-last layer's 196 patches; 12 layers, 768 wide; LLaVA-NeXT: a 300 x 500 image as
its base tile and 2 x 2 tiles of the 448 x 448 pinpoint, 5 x 196 patches packed into 660 tokens) or a SigLIP tower of
the same size
(Gemma 3: 196 patches pooled to 49 tokens) or Qwen2-VL's (12 blocks, 768 wide, 16 x 16 patches of 14 px merged
into 64 tokens, M-RoPE), each with a 4-layer decoder 1024 wide (16 heads, 4 key/value heads,
MLP 2816, vocab 8000). Both sides run the same batch-1 prompt (20 text tokens around the image's tokens) in
interleaved rounds: the forward with the image, and greedy generate of ``--new`` tokens; the best round of each is
reported, with the largest logit difference and whether the tokens agree.
"""
from __future__ import annotations

import argparse


def _llava(transformers):
    text = dict(model_type="llama", num_hidden_layers=4, hidden_size=1024, num_attention_heads=16,
                num_key_value_heads=4, intermediate_size=2816, vocab_size=8000, max_position_embeddings=1024)
    vision = dict(model_type="clip_vision_model", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, image_size=224, patch_size=16, projection_dim=512)
    cfg = transformers.LlavaConfig(text_config=text, vision_config=vision, image_token_index=7999)
    return transformers.LlavaForConditionalGeneration(cfg).eval(), 7999, 196, {}


def _llava_next(transformers):
    text = dict(model_type="llama", num_hidden_layers=4, hidden_size=1024, num_attention_heads=16,
                num_key_value_heads=4, intermediate_size=2816, vocab_size=8000, max_position_embeddings=1024)
    vision = dict(model_type="clip_vision_model", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, image_size=224, patch_size=16, projection_dim=512)
    cfg = transformers.LlavaNextConfig(text_config=text, vision_config=vision, image_token_index=7999,
                                       image_grid_pinpoints=[[224, 448], [448, 224], [448, 448]])
    return transformers.LlavaNextForConditionalGeneration(cfg).eval(), 7999, None, {"image_sizes": [300, 500]}


def _gemma3(transformers):
    text = dict(num_hidden_layers=4, hidden_size=1024, num_attention_heads=16, num_key_value_heads=4, head_dim=64,
                intermediate_size=2816, vocab_size=8000, max_position_embeddings=1024, sliding_window=64,
                layer_types=["sliding_attention"] * 3 + ["full_attention"])
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=16, vision_use_head=False)
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=49,
                                    image_token_id=7999, boi_token_id=7997, eoi_token_id=7998)
    return transformers.Gemma3ForConditionalGeneration(cfg).eval(), 7999, 49, {"token_type_ids": True}


def _qwen2_vl(transformers):
    text = dict(num_hidden_layers=4, hidden_size=1024, num_attention_heads=16, num_key_value_heads=4,
                intermediate_size=2816, vocab_size=8000, max_position_embeddings=1024,
                rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[8, 12, 12]))
    vision = dict(depth=12, embed_dim=768, hidden_size=1024, num_heads=12, mlp_ratio=4, patch_size=14)
    cfg = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=7999,
                                     vision_start_token_id=7997, vision_end_token_id=7998)
    return transformers.Qwen2VLForConditionalGeneration(cfg).eval(), 7999, 64, {"grid": [1, 16, 16]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="llava,llava_next,gemma3,qwen2_vl")
    p.add_argument("--new", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    import numpy as np
    import torch
    import transformers

    import forgegrad as fg
    from forgegrad.bench._timing import best_of_interleaved, pinned_threads
    from forgegrad.bench.hf_encoders import forgegrad_copy
    from forgegrad.models.hf.generation import generate

    transformers.logging.set_verbosity_error()
    makers = {"llava": _llava, "llava_next": _llava_next, "gemma3": _gemma3, "qwen2_vl": _qwen2_vl}
    for name in args.models.split(","):
        torch.manual_seed(0)
        hf, image_token, count, extra = makers[name](transformers)
        model = forgegrad_copy(hf)
        if "image_sizes" in extra:  # LLaVA-NeXT: the image's token count from its size
            count = model.image_token_counts([extra["image_sizes"]])[0]
        rng = np.random.RandomState(0)
        ids = np.concatenate([rng.randint(3, 7000, 10), np.full(count, image_token), rng.randint(3, 7000, 10)])[None]
        pixels = rng.randn(1, 3, 224, 224).astype(np.float32)
        if "grid" in extra:  # Qwen2-VL: the processor's flattened patches and their grid
            pixels = rng.randn(int(np.prod(extra["grid"])), 3 * 2 * 14 * 14).astype(np.float32)
        if "image_sizes" in extra:  # its base tile and 2 x 2 grid tiles
            pixels = rng.randn(1, 5, 3, 224, 224).astype(np.float32)
        ours = {"pixel_values": pixels}
        theirs = {"pixel_values": torch.tensor(pixels)}
        if "grid" in extra:
            grid = np.array([extra["grid"]])
            ours["image_grid_thw"], theirs["image_grid_thw"] = grid, torch.tensor(grid)
            theirs["mm_token_type_ids"] = torch.tensor((ids == image_token).astype(np.int64))
        if "image_sizes" in extra:
            sizes = np.array([extra["image_sizes"]])
            ours["image_sizes"], theirs["image_sizes"] = sizes, torch.tensor(sizes)
        if extra.get("token_type_ids"):
            kinds = (ids == image_token).astype(np.int64)
            ours["token_type_ids"], theirs["token_type_ids"] = kinds, torch.tensor(kinds)
        ti = torch.tensor(ids)
        kw = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False)
        with pinned_threads(1), torch.no_grad(), fg.no_grad():
            best, out = best_of_interleaved({
                "fg forward": lambda: model(ids, **ours).numpy(),
                "hf forward": lambda: hf(input_ids=ti, **theirs).logits.numpy(),
                "fg generate": lambda: generate(model, ids, **ours, **kw),
                "hf generate": lambda: hf.generate(input_ids=ti, **theirs, **kw).numpy()}, args.rounds, warmup=1)
        diff = np.abs(out["fg forward"] - out["hf forward"]).max() / np.abs(out["hf forward"]).max()
        same = out["fg generate"].shape == out["hf generate"].shape and bool((out["fg generate"] ==
                                                                            out["hf generate"]).all())
        print(f"{name}: prompt of {ids.shape[1]} tokens ({count} image tokens), {args.new} new tokens, 1 thread, "
              f"best of {args.rounds}: forward {best['fg forward'] * 1e3:.0f} ms vs transformers "
              f"{best['hf forward'] * 1e3:.0f} ms ({best['hf forward'] / best['fg forward']:.2f}x); generate "
              f"{best['fg generate'] * 1e3:.0f} ms vs {best['hf generate'] * 1e3:.0f} ms "
              f"({best['hf generate'] / best['fg generate']:.2f}x); logits max diff / max {diff:.1e}; tokens "
              f"equal: {same}")


if __name__ == "__main__":
    main()
