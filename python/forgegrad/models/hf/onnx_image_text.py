"""ONNX export of the image-text decoders (Gemma3ForConditionalGeneration, LlavaForConditionalGeneration,
PaliGemmaForConditionalGeneration; Qwen2VLForConditionalGeneration and Qwen2_5_VLForConditionalGeneration with the
inputs of onnx_qwen2_vl.py: patches and their grids, 3-D M-RoPE positions; LlavaNextForConditionalGeneration with
onnx_llava_next.py's tiles, packed on the host) as three graphs, in the layout of Hugging
Face optimum's / transformers.js's image-text exports, and greedy or sampled decoding on them in onnxruntime.

``export_image_text(model, folder)`` writes:

- ``vision_encoder.onnx``: ``pixel_values`` (batch, 3, image_size, image_size) float32 -> ``image_features``
  (batch, tokens per image, hidden): the rows that replace each image's tokens in the prompt (vision tower and
  projector: ``model.image_features``);
- ``embed_tokens.onnx``: ``input_ids`` (batch, sequence) int64 -> ``inputs_embeds`` (batch, sequence, hidden), the
  text embedding as forgegrad's model applies it (Gemma's times sqrt(hidden_size); an image token past the text
  vocabulary read as id 0, as transformers);
- ``decoder_model_merged.onnx``: ``inputs_embeds``, ``attention_mask`` (batch, past_sequence + sequence) int64,
  for Gemma 3 and PaliGemma ``token_type_ids`` (batch, sequence) int64, and ``past_key_values.<i>.key`` /
  ``.value`` -> ``logits`` and ``present.<i>.key`` / ``.value``: export_with_past's decoder (onnx_export.py, the
  same trace of ``forward_graph``, positions and masks computed from the mask) fed rows instead of ids. Gemma 3's
  token types are 1 on image tokens (the tokens of one image attend to each other both ways; zeros: causal),
  PaliGemma's 0 on the prefix (which attends to itself both ways) and 1 on the suffix (ones: causal); a decode
  step passes the new token's type (Gemma 3: 0, PaliGemma: 1). The decoder computes positions from the mask as
  ``generate`` does (PaliGemma's from 1), so it takes no ``position_ids`` (but Qwen2-VL's, whose M-RoPE positions
  follow the images: onnx_qwen2_vl.py).

Qwen2-VL's vision graph takes the processor's patches and ``grid_thw`` (onnx_qwen2_vl.py; a video's frame groups too),
LLaVA-NeXT's any number of tiles, packed by ``image_sizes`` on the host (onnx_llava_next.py).

The host places the images' rows at the image tokens (transformers' masked_scatter), as transformers.js does;
``generate_image_text_onnx`` does so and decodes. Every graph is verified in onnxruntime against forgegrad at the
example's sizes and at others; batch and sequence axes are dynamic, the image size is the tower's.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from ... import nn
from ...factories import cat
from ...tensor import Tensor
from ._layers import PastKeyValues
from .generation import UNSET
from .beam_search import fill_token, search
from .onnx_beam import beam_result
from .onnx_decoding import TokenPicker, check_prompt, decoding, logits_vocab, processors, save_generation_config
from .onnx_export import _example, graph_logits, input_names, output_names
from .onnx_llava_next import ANYRES_KEY, AnyresVisionEncoder, anyres_metadata, is_anyres_model, pack_tiles, split_tiles
from .onnx_qwen2_vl import (MROPE_MERGE_KEY, TOKENS_PER_SECOND_KEY, VIDEO_TOKEN_KEY, MRopePositions,
                            Qwen2VLDecoderWithPast, decoder_example, export_patch_vision, is_mrope_model,
                            mrope_metadata, video_steps)

__all__ = ["GRAPHS", "ImageTextSessions", "export_image_text", "generate_image_text_onnx", "is_image_text_folder"]

GRAPHS = ("vision_encoder.onnx", "embed_tokens.onnx", "decoder_model_merged.onnx")
IMAGE_TOKEN_KEY = "forgegrad.image_token_id"
TOKEN_TYPES_KEY = "forgegrad.token_types"  # "image_blocks" (Gemma 3), "prefix" (PaliGemma); LLaVA: none
_WHO = "export_image_text"


def token_types_kind(model) -> Optional[str]:
    """What the decoder's token_type_ids mean for ``model``: "image_blocks", "prefix" or None (LLaVA: causal)."""
    name = getattr(model, "architecture", "")
    return {"Gemma3ForConditionalGeneration": "image_blocks",
            "PaliGemmaForConditionalGeneration": "prefix"}.get(name)


# the image-text models these graphs compute
EXPORTABLE = ("Gemma3ForConditionalGeneration", "LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration",
              "PaliGemmaForConditionalGeneration", "Qwen2VLForConditionalGeneration",
              "Qwen2_5_VLForConditionalGeneration")


def _check_model(model, who: str) -> None:
    if not getattr(model, "takes_images", False) or not callable(getattr(model, "image_features", None)):
        from .image_prompts import PLACEHOLDERS
        raise TypeError(f"{who}: model must be an image-text model ({', '.join(PLACEHOLDERS)}), got "
                        f"{type(model).__name__} (a text decoder exports with export_with_past)")
    if getattr(model, "architecture", type(model).__name__) not in EXPORTABLE:
        raise NotImplementedError(f"{who}: {type(model).__name__} does not export to ONNX yet (exported: "
                                  f"{', '.join(EXPORTABLE)})")


class VisionEncoder(nn.Module):
    """``forward(pixel_values)`` -> the projected image rows (N, tokens per image, hidden)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model.image_features(pixel_values)


class EmbedTokens(nn.Module):
    """``forward(input_ids)`` -> the text embedding rows (B, T, hidden), as the model's forward embeds them."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        m = self.model
        # transformers reads an image (Qwen2-VL: or video) token past the vocabulary as id 0
        if max(m.image_token_id, getattr(m, "video_token_id", -1)) >= m.vocab_size:
            input_ids = input_ids * (input_ids < m.vocab_size).long()
        return m._embed(input_ids)


class EmbedsDecoderWithPast(nn.Module):
    """``forward(inputs_embeds, attention_mask, [token_type_ids,] k0, v0, ...)`` -> ``(logits, k0', v0', ...)``:
    export_with_past's DecoderWithPast fed rows, with the image-text model's token-type attention."""

    def __init__(self, model, logits_to_keep: int = 0):
        super().__init__()
        self.decoder, self.logits_to_keep = model, logits_to_keep
        self.kind = token_types_kind(model)

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor, *rest: Tensor):
        types, past = (rest[0], rest[1:]) if self.kind else (None, rest)
        cache = PastKeyValues(list(past[0::2]), list(past[1::2]))
        both = None if types is None else self._both_ways(types, attention_mask, cache.length)
        logits = graph_logits(self.decoder, None, attention_mask, cache, self.logits_to_keep,
                              inputs_embeds=inputs_embeds, both_ways=both,
                              window_bounds_both_ways=self.kind == "image_blocks")
        return (logits, *(t for kv in zip(cache.keys, cache.values) for t in kv))

    def _both_ways(self, types: Tensor, attention_mask: Tensor, past) -> Tensor:
        """(B, T, past + T) 0/1: the (new token, key) pairs that attend both ways: Gemma 3's two tokens of one image
        (no text token between them), PaliGemma's two prefix tokens. The cached tokens count as text (Gemma 3) or
        suffix (PaliGemma): token types apply to a prompt from position 0, as forgegrad's forward."""
        t = types.float()  # (B, T) 0/1
        cached = attention_mask[:, :past].float() * 0 + (0.0 if self.kind == "image_blocks" else 1.0)
        key_types = cat([cached, t], -1)  # (B, past + T)
        if self.kind == "prefix":
            return (1 - t).unsqueeze(2) * (1 - key_types).unsqueeze(1)
        # two image tokens are one image's when no text token lies between them: equal counts of text tokens
        text_seen = (1 - key_types).cumsum(-1)
        q_seen = text_seen[:, past:]
        same = ((q_seen.unsqueeze(2) - text_seen.unsqueeze(1)).abs() < 0.5).float()
        return same * t.unsqueeze(2) * key_types.unsqueeze(1)


def _pixels_example(model, batch: int, seed: int) -> np.ndarray:
    c = model.vision_tower.config
    shape = (batch, c.get("num_channels", 3), c["image_size"], c["image_size"])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _metadata(model) -> dict:
    out = {IMAGE_TOKEN_KEY: str(int(model.image_token_id))}
    if is_mrope_model(model):
        out.update(mrope_metadata(model))
    if is_anyres_model(model):
        out[ANYRES_KEY] = anyres_metadata(model)
    kind = token_types_kind(model)
    if kind:
        out[TOKEN_TYPES_KEY] = kind
    return out


def export_image_text(model, folder, *, logits_to_keep: int = 0, opset: int = 17, verify: bool = True,
                      rtol: float = 1e-4, atol: float = 1e-4, seed: int = 0) -> dict:
    """Export ``model`` (one of ``EXPORTABLE``: Gemma 3, LLaVA, LLaVA-NeXT, PaliGemma, Qwen2-VL, Qwen2.5-VL) to
    ``folder`` as the module docstring's three graphs (and the checkpoint's
    generation_config.json), each verified in onnxruntime against forgegrad with ``verify`` (vision: batches 2, 1
    and 3; embeddings: (2, 5), (1, 1), (3, 9); decoder: export_with_past's sizes). ``logits_to_keep=1``: the
    decoder's logits (batch, 1, vocab), the last position's only. Returns {graph file name: ExportReport}."""
    from ...onnx import export

    _check_model(model, _WHO)
    if isinstance(logits_to_keep, bool) or logits_to_keep not in (0, 1):
        raise ValueError(f"{_WHO}: logits_to_keep must be 0 (every position's logits) or 1 (the last position's), "
                         f"got {logits_to_keep!r}")
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    common = dict(opset=opset, verify=verify, rtol=rtol, atol=atol)
    reports = {}
    was_training = model.training
    model.eval()
    try:
        if is_mrope_model(model):
            reports[GRAPHS[0]] = export_patch_vision(model, os.path.join(folder, GRAPHS[0]), seed, common, _WHO)
        else:  # LLaVA-NeXT: its tiles, and the image_newline row the host packs them with
            anyres = is_anyres_model(model)
            reports[GRAPHS[0]] = export(
                (AnyresVisionEncoder if anyres else VisionEncoder)(model),
                (Tensor._stored(_pixels_example(model, 2, seed)),), os.path.join(folder, GRAPHS[0]),
                dynamic_axes={"pixel_values": {0: "batch"}, "image_features": {0: "batch"}},
                input_names=["pixel_values"], output_names=["image_features"] + (["image_newline"] if anyres else []),
                verify_sizes=[{"batch": 1}, {"batch": 3}], **common)
        ids = np.random.default_rng(seed).integers(0, model.vocab_size, size=(2, 5), dtype=np.int64)
        seq = {0: "batch", 1: "sequence"}
        reports[GRAPHS[1]] = export(
            EmbedTokens(model), (Tensor._stored(ids),), os.path.join(folder, GRAPHS[1]),
            dynamic_axes={"input_ids": seq, "inputs_embeds": seq}, input_names=["input_ids"],
            output_names=["inputs_embeds"], verify_sizes=[{"batch": 1, "sequence": 1}, {"batch": 3, "sequence": 9}],
            **common)
        reports[GRAPHS[2]] = _export_decoder(model, os.path.join(folder, GRAPHS[2]), logits_to_keep, seed, common)
    finally:
        model.train(was_training)
    save_generation_config(model, folder, _WHO)
    return reports


def _export_decoder(model, path: str, logits_to_keep: int, seed: int, common: dict):
    """export_with_past's decoder graph with ``inputs_embeds`` in place of ``input_ids`` (and token_type_ids, or
    Qwen2-VL's 3-D position_ids)."""
    from ...onnx import export

    kind = token_types_kind(model)
    mrope = is_mrope_model(model)
    past_in, outs = input_names(model)[2:], output_names(model)
    names = ["inputs_embeds", "attention_mask"] + (["token_type_ids"] if kind else []) + (
        ["position_ids"] if mrope else []) + past_in
    axes = {"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "past_sequence+sequence"},
            "token_type_ids": {0: "batch", 1: "sequence"}, "position_ids": {1: "batch", 2: "sequence"},
            "logits": {0: "batch"} if logits_to_keep else {0: "batch", 1: "sequence"}}
    axes.update({n: {0: "batch", 2: "past_sequence"} for n in past_in})
    axes.update({n: {0: "batch", 2: "past_sequence+sequence"} for n in outs[1:]})
    if not kind:
        del axes["token_type_ids"]
    if not mrope:
        del axes["position_ids"]
    ids, mask, *kv = _example(model, 2, 3, 4, seed)
    rng = np.random.default_rng(seed + 1)
    embeds = rng.standard_normal((*ids.shape, model.config["hidden_size"])).astype(np.float32)
    # the example's token types hold both kinds, so that the verifier's random ones (in the example's range) do too
    types = [np.array([[0, 1, 1, 0], [1, 1, 0, 1]], np.int64)] if kind else []
    positions = [decoder_example(model, ids, seed)] if mrope else []
    example = tuple(Tensor._stored(a) for a in [embeds, mask, *types, *positions, *kv])
    sizes = [{"batch": 1, "past_sequence": 0, "sequence": 5}, {"batch": 3, "past_sequence": 9, "sequence": 1},
             {"batch": 2, "past_sequence": 7, "sequence": 7}]
    module = (Qwen2VLDecoderWithPast if mrope else EmbedsDecoderWithPast)(model, logits_to_keep)
    return export(module, example, path, dynamic_axes=axes, input_names=names,
                  output_names=outs, verify_sizes=sizes, metadata=_metadata(model), **common)


def is_image_text_folder(path) -> bool:
    """Whether ``path`` is a folder holding the graphs of ``export_image_text``."""
    if not isinstance(path, str) and not hasattr(path, "__fspath__"):
        return False
    folder = os.fspath(path)
    return os.path.isdir(folder) and all(os.path.isfile(os.path.join(folder, g)) for g in GRAPHS)


class ImageTextSessions:
    """The three onnxruntime sessions of an ``export_image_text`` folder (``folder`` a path), with what the decoder's
    metadata says: ``image_token_id``, ``token_types`` ("image_blocks", "prefix" or None), Qwen2-VL's
    ``mrope_merge``, ``video_token_id`` and (Qwen2.5-VL) ``tokens_per_second``, and the vision graph's image shape.
    ``threads``: each session's intra-op threads (one inter-op thread, sequential), as the benchmarks pin them;
    None: onnxruntime's default."""

    def __init__(self, folder, threads: Optional[int] = None):
        import onnxruntime as ort
        self.folder = os.fspath(folder)
        missing = [g for g in GRAPHS if not os.path.isfile(os.path.join(self.folder, g))]
        if missing:
            raise ValueError(f"ImageTextSessions: folder {self.folder!r} lacks {', '.join(missing)} "
                             "(export_image_text writes them)")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads is not None:
            opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.vision, self.embed, self.decoder = (
            ort.InferenceSession(os.path.join(self.folder, g), sess_options=opts, providers=["CPUExecutionProvider"])
            for g in GRAPHS)
        meta = self.decoder.get_modelmeta().custom_metadata_map
        self.image_token_id = int(meta[IMAGE_TOKEN_KEY])
        self.token_types = meta.get(TOKEN_TYPES_KEY)
        # Qwen2-VL: the vision graph takes patches and grid_thw, the decoder (3, B, T) position_ids; videos' token
        # and Qwen2.5-VL's tokens per second (a folder exported before videos has neither)
        self.mrope_merge = int(meta[MROPE_MERGE_KEY]) if MROPE_MERGE_KEY in meta else None
        self.video_token_id = int(meta[VIDEO_TOKEN_KEY]) if VIDEO_TOKEN_KEY in meta else None
        self.tokens_per_second = float(meta[TOKENS_PER_SECOND_KEY]) if TOKENS_PER_SECOND_KEY in meta else None
        # LLaVA-NeXT: the vision graph gives tiles' rows, packed here by image_sizes
        self.anyres = json.loads(meta[ANYRES_KEY]) if ANYRES_KEY in meta else None
        self.image_shape = tuple(self.vision.get_inputs()[0].shape[1:])
        self.past_names = [i.name for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]

    def image_rows(self, pixel_values, image_grid_thw=None, image_sizes=None) -> np.ndarray:
        """The vision graph's (N, tokens per image, hidden) for ``pixel_values`` (N, 3, S, S), checked; Qwen2-VL's
        (merged patches, hidden) for the processor's patches (num_patches, patch_dim) and ``image_grid_thw``;
        LLaVA-NeXT's (image tokens, hidden) for its tiles and ``image_sizes``, packed (onnx_llava_next.py)."""
        pixels = np.asarray(pixel_values.numpy() if isinstance(pixel_values, Tensor) else pixel_values, np.float32)
        if self.mrope_merge is not None:
            if image_sizes is not None:
                raise TypeError("image_sizes goes with LLaVA-NeXT's graphs; Qwen2-VL's take image_grid_thw")
            return self._patch_rows(pixels, image_grid_thw)
        if image_grid_thw is not None:
            raise TypeError("image_grid_thw goes with Qwen2-VL's graphs (patches and their grids); this vision graph "
                            f"takes whole images {self.image_shape}")
        if self.anyres is not None:
            return self._tile_rows(pixels, image_sizes)
        if image_sizes is not None:
            raise TypeError("image_sizes goes with LLaVA-NeXT's graphs (tiles packed by size); this vision graph "
                            f"takes whole images {self.image_shape}")
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != self.image_shape or pixels.shape[0] == 0:
            raise ValueError(f"pixel_values must be (images >= 1, {', '.join(map(str, self.image_shape))}) as the "
                             f"exported vision tower takes them, got shape {pixels.shape}")
        return self.vision.run(None, {"pixel_values": pixels})[0]

    def patch_grid(self, pixel_values, image_grid_thw, kind: str = "image") -> np.ndarray:
        """Qwen2-VL's ``image_grid_thw`` as an int64 (num_images, 3) array, checked with ``pixel_values`` (the
        processor's patches (num_patches, patch_dim)); ``kind`` "video": ``video_grid_thw`` with
        ``pixel_values_videos``."""
        from .qwen2_vl_vision import check_grid
        pixels, grid = ("pixel_values", "image_grid_thw") if kind == "image" else (
            "pixel_values_videos", "video_grid_thw")
        shape = tuple(getattr(pixel_values, "shape", np.shape(pixel_values)))
        if len(shape) != 2 or shape[1:] != self.image_shape or shape[0] == 0:
            raise ValueError(f"{pixels} must be the processor's flattened patches (num_patches >= 1, "
                             f"{self.image_shape[0]}) as the exported vision tower takes them, got shape {shape}")
        if image_grid_thw is None:
            raise ValueError(f"{grid}: Qwen2-VL's {pixels} need their grids (num_{kind}s, 3), as the "
                             "processor returns them")
        return check_grid(image_grid_thw, shape[0], self.mrope_merge, grid, kind)

    def videos(self, pixel_values_videos, video_grid_thw, second_per_grid_ts, who: str):
        """Qwen2-VL's / Qwen2.5-VL's videos checked: None without any, else (the patches float32, ``video_grid_thw``
        (num_videos, 3) int64, each video's temporal step per frame group (None: 1))."""
        given = [n for n, v in (("pixel_values_videos", pixel_values_videos), ("video_grid_thw", video_grid_thw),
                                ("second_per_grid_ts", second_per_grid_ts)) if v is not None]
        if not given:
            return None
        if self.mrope_merge is None:
            raise TypeError(f"{who}: {' / '.join(given)} go with Qwen2-VL's and Qwen2.5-VL's graphs; this folder's "
                            f"vision graph takes whole images {self.image_shape}")
        if self.video_token_id is None:
            raise ValueError(f"{who}: {self.folder!r} was exported before the graphs took videos (its decoder's "
                             f"metadata lacks {VIDEO_TOKEN_KEY}): export it again with export_image_text")
        if pixel_values_videos is None:
            raise ValueError(f"{who}: {' / '.join(given)} given without pixel_values_videos")
        raw = pixel_values_videos.numpy() if isinstance(pixel_values_videos, Tensor) else pixel_values_videos
        pixels = np.asarray(raw, np.float32)
        grid = self.patch_grid(pixels, video_grid_thw, "video")
        return pixels, grid, video_steps(self.tokens_per_second, second_per_grid_ts, len(grid), who)

    def _tile_rows(self, pixels: np.ndarray, image_sizes) -> np.ndarray:
        if pixels.ndim not in (4, 5) or tuple(pixels.shape[-3:]) != self.image_shape or pixels.shape[0] == 0:
            tile = ", ".join(map(str, self.image_shape))
            raise ValueError(f"pixel_values must be LLaVA-NeXT's tiles (images, tiles, {tile}) or (total tiles, "
                             f"{tile}) as the exported vision tower takes them, got shape {pixels.shape}")
        tiles, counts, sizes = split_tiles(pixels, image_sizes, self.anyres, "image_sizes")
        features, newline = self.vision.run(None, {"pixel_values": np.ascontiguousarray(tiles)})
        return pack_tiles(features, newline, sizes, counts, self.anyres)

    def _patch_rows(self, pixels: np.ndarray, image_grid_thw) -> np.ndarray:
        grid = self.patch_grid(pixels, image_grid_thw)
        return self.vision.run(None, {"pixel_values": pixels, "grid_thw": grid})[0]

    def embeds(self, ids: np.ndarray, image_rows: Optional[np.ndarray],
               video_rows: Optional[np.ndarray] = None) -> np.ndarray:
        """The decoder's inputs_embeds: the embedding graph's rows with the images' rows at the image tokens, in order
        (the counts must agree), and Qwen2-VL's videos' rows (``video_rows``, the vision graph's) at the video
        tokens."""
        x = self.embed.run(None, {"input_ids": ids})[0]
        if video_rows is not None:
            video = ids == self.video_token_id
            if int(video.sum()) != video_rows.shape[0]:
                raise ValueError(f"pixel_values_videos: the prompt holds {int(video.sum())} video tokens (id "
                                 f"{self.video_token_id}) but the videos give {video_rows.shape[0]}")
            x[video] = video_rows
        image = ids == self.image_token_id
        count = int(image.sum())
        rows = np.zeros((0, x.shape[-1]), np.float32) if image_rows is None else image_rows.reshape(-1, x.shape[-1])
        if count != rows.shape[0]:
            each = "" if image_rows is None or image_rows.ndim != 3 else \
                f"{image_rows.shape[0]} images, {image_rows.shape[1]} each: "
            raise ValueError(f"pixel_values: the prompt holds {count} image tokens (id {self.image_token_id}) but "
                             f"the images give {each}{rows.shape[0]}")
        x[image] = rows
        return x

    def video_rows(self, videos) -> Optional[np.ndarray]:
        """The vision graph's (merged patches of all videos, hidden) for ``videos`` (``self.videos``' checked
        triple, or None)."""
        if videos is None:
            return None
        return self.vision.run(None, {"pixel_values": videos[0], "grid_thw": videos[1]})[0]

    def prefill(self, ids: np.ndarray, mask: np.ndarray, pixel_values=None, token_type_ids=None, image_grid_thw=None,
                positions: Optional[np.ndarray] = None, image_sizes=None, pixel_values_videos=None,
                video_grid_thw=None, second_per_grid_ts=None):
        """(logits, present) of the decoder's first call on a prompt (``ids``, ``mask`` (B, T) int64) with its
        images: the vision graph, the embedding graph, the rows merged, the decoder with no past. Qwen2-VL:
        ``image_grid_thw`` with the patches, videos (``pixel_values_videos``, ``video_grid_thw``, Qwen2.5-VL's
        ``second_per_grid_ts``) through the same vision graph; ``positions`` (3, B, T), by default MRopePositions'
        of the prompt. LLaVA-NeXT: ``image_sizes`` with the tiles."""
        videos = self.videos(pixel_values_videos, video_grid_thw, second_per_grid_ts, "prefill")
        rows = None if pixel_values is None else self.image_rows(pixel_values, image_grid_thw, image_sizes)
        if self.mrope_merge is not None and positions is None:
            grid = None if pixel_values is None else self.patch_grid(pixel_values, image_grid_thw)
            positions = self.positions(ids, mask, grid, videos, "prefill").prompt
        embeds = self.embeds(ids, rows, self.video_rows(videos))
        logits, *present = self.decoder.run(None, self.decoder_feed(embeds, mask, token_type_ids,
                                                                    self.empty_past(ids.shape[0]), positions))
        return logits, dict(zip(self.past_names, present))

    def positions(self, ids: np.ndarray, mask: np.ndarray, grid: Optional[np.ndarray], videos, who: str):
        """Qwen2-VL's MRopePositions of a prompt with the images' ``grid`` (or None) and ``videos`` (``self.videos``'
        checked triple, or None)."""
        video_grid, steps = (None, None) if videos is None else videos[1:]
        return MRopePositions(ids, mask, self.image_token_id, grid, self.mrope_merge, who,
                              video_token_id=self.video_token_id, video_grid=video_grid, video_steps=steps)

    def empty_past(self, batch: int) -> dict:
        """The decoder's past inputs for a first call: (batch, heads, 0, head_dim) zeros."""
        return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), np.float32) for i in self.decoder.get_inputs()
                if i.name in self.past_names}

    def decoder_feed(self, embeds: np.ndarray, mask: np.ndarray, types: Optional[np.ndarray], past: dict,
                     positions: Optional[np.ndarray] = None) -> dict:
        """The decoder's inputs; ``positions`` (3, B, T) int64: Qwen2-VL's M-RoPE position_ids (required there)."""
        feed = {"inputs_embeds": embeds, "attention_mask": mask, **past}
        if self.mrope_merge is not None:
            if positions is None:
                raise ValueError("decoder_feed: Qwen2-VL's decoder graph needs its (3, batch, sequence) position_ids")
            feed["position_ids"] = np.asarray(positions, np.int64)
        if self.token_types:
            if types is None:  # causal: no image blocks (Gemma 3: 0), everything suffix (PaliGemma: 1)
                types = np.full(embeds.shape[:2], int(self.token_types == "prefix"), np.int64)
            feed["token_type_ids"] = types
        return feed


def _token_types(sessions: ImageTextSessions, token_type_ids, shape) -> Optional[np.ndarray]:
    if token_type_ids is None:
        return None
    if sessions.token_types is None:
        raise TypeError("generate_image_text_onnx: token_type_ids: this graph's attention is causal (LLaVA); it "
                        "takes none")
    kinds = np.asarray(token_type_ids.numpy() if isinstance(token_type_ids, Tensor) else token_type_ids)
    if kinds.shape != tuple(shape) or kinds.dtype.kind not in "iub" or not np.isin(kinds, (0, 1)).all():
        raise ValueError(f"generate_image_text_onnx: token_type_ids must be 0/1 integers of the input_ids' shape "
                         f"{tuple(shape)}, got {kinds.dtype} {kinds.shape}")
    return kinds.astype(np.int64)


def _mrope_positions(sessions: ImageTextSessions, ids, mask, pixel_values, image_grid_thw, videos, who: str):
    """Qwen2-VL's MRopePositions for the prompt (None for the other graphs, which take no image_grid_thw)."""
    if sessions.mrope_merge is None:
        if image_grid_thw is not None:
            raise TypeError(f"{who}: image_grid_thw goes with Qwen2-VL's graphs; these take whole images")
        return None
    if pixel_values is None and image_grid_thw is not None:
        raise ValueError(f"{who}: image_grid_thw was given without pixel_values")
    grid = None if pixel_values is None else sessions.patch_grid(pixel_values, image_grid_thw)
    return sessions.positions(ids, mask, grid, videos, who)


def generate_image_text_onnx(folder, input_ids, attention_mask=None, pixel_values=None, token_type_ids=None,
                             max_new_tokens: Optional[int] = None, eos_token_id=UNSET, pad_token_id=UNSET,
                             do_sample: Optional[bool] = None, temperature: Optional[float] = None, top_k=UNSET,
                             top_p=UNSET, min_p=UNSET, num_beams: Optional[int] = None,
                             num_return_sequences: Optional[int] = None, *, repetition_penalty: Optional[float] = None,
                             no_repeat_ngram_size: Optional[int] = None, min_length: Optional[int] = None,
                             length_penalty: Optional[float] = None, early_stopping=None, forced_bos_token_id=UNSET,
                             forced_eos_token_id=UNSET, generation_config=None, tokenizer=None,
                             image_grid_thw=None, image_sizes=None, pixel_values_videos=None, video_grid_thw=None,
                             second_per_grid_ts=None, **settings) -> np.ndarray:
    """``generate(model, input_ids, pixel_values=..., token_type_ids=...)`` on the graphs of ``export_image_text``
    (``folder``: its path, or an ImageTextSessions; ``generate_onnx`` given the folder calls this): the images
    through the vision graph, their rows placed at the image tokens, one decoder call on the prompt and one per new
    token (embedded by the embedding graph), each token chosen as ``generate`` chooses it (onnx_decoding.py: the
    settings resolved from the arguments, the generation config beside the graphs, generate's defaults); beam search
    (``num_beams``) and several sequences per prompt start each prompt's rows from its one prefill. Qwen2-VL /
    Qwen2.5-VL: ``pixel_values`` the processor's patches with their ``image_grid_thw``; the decoder's M-RoPE
    positions computed here as generate's (onnx_qwen2_vl.py); videos as generate takes them
    (``pixel_values_videos``, ``video_grid_thw``, Qwen2.5-VL's ``second_per_grid_ts``), beside images or alone,
    through the same vision graph, their rows at the video tokens. LLaVA-NeXT: ``pixel_values`` its tiles with their
    ``image_sizes`` (onnx_llava_next.py). Returns the prompts followed by the new tokens (batch * sequences per
    prompt, prompt + new) int64."""
    who = "generate_image_text_onnx"
    sessions = folder if isinstance(folder, ImageTextSessions) else ImageTextSessions(folder)
    ids, mask = check_prompt(who, input_ids, attention_mask)
    if not mask.any(axis=1).all():
        raise ValueError(f"{who}: every prompt needs at least one real token (attention_mask row of zeros)")
    types = _token_types(sessions, token_type_ids, ids.shape)
    videos = sessions.videos(pixel_values_videos, video_grid_thw, second_per_grid_ts, who)
    rope = _mrope_positions(sessions, ids, mask, pixel_values, image_grid_thw, videos, who)
    if image_sizes is not None and pixel_values is None:
        raise ValueError(f"{who}: image_sizes were given without pixel_values")
    B, T = ids.shape
    arguments = dict(max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                     do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                     num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                     num_return_sequences=num_return_sequences, repetition_penalty=repetition_penalty,
                     no_repeat_ngram_size=no_repeat_ngram_size, min_length=min_length,
                     forced_bos_token_id=forced_bos_token_id, forced_eos_token_id=forced_eos_token_id)
    graph = os.path.join(sessions.folder, GRAPHS[2])
    d = decoding(who, graph, generation_config, logits_vocab(sessions.decoder), tokenizer, T, arguments, settings)
    K, R = d.beams[0], d.beams[3]
    new = d.max_new_tokens
    if new == 0:  # (the images and videos still checked against the prompt's image and video tokens)
        sessions.embeds(ids, None if pixel_values is None else sessions.image_rows(pixel_values, image_grid_thw,
                                                                                   image_sizes),
                        sessions.video_rows(videos))
        return np.repeat(ids, R, axis=0)
    logits, past = sessions.prefill(ids, mask, pixel_values, types, image_grid_thw,
                                    None if rope is None else rope.prompt, image_sizes, pixel_values_videos,
                                    video_grid_thw, second_per_grid_ts)
    # each prompt's rows (its K beams, or its R draws) start from its one prefill: the logits and cache repeated
    rows = K if K > 1 else R
    steps = _RowSteps(sessions, np.repeat(mask, rows, axis=0), rope, rows,
                      None if types is None else int(sessions.token_types == "prefix"),
                      {n: np.repeat(a, rows, axis=0) for n, a in past.items()})
    first = np.repeat(logits[:, -1], rows, axis=0)
    if K > 1:
        process = processors(d, T + new, ids, padding=mask.argmax(axis=1), prompt_length=T)
        seqs, lengths = search(first, steps, B, K, new, d.eos, fill_token(d.pad, d.eos), d.beams[1], d.beams[2],
                               process, np.repeat(ids, K, axis=0), R, d.sampler, d.stopping)
        return beam_result(ids, seqs, lengths, R)
    ids, mask = np.repeat(ids, R, axis=0), np.repeat(mask, R, axis=0)
    process = processors(d, T + new, ids[::R], padding=mask.argmax(axis=1), prompt_length=T)
    pick = TokenPicker(ids, new, d.eos, d.pad, d.sampler, process, d.stopping)
    logits = first
    while True:
        nxt = pick(logits)
        if pick.finished or pick.length == T + new:
            break
        logits = steps(nxt, None)
    return pick.sequences.copy()


class _RowSteps:
    """The decode steps of B * rows rows after one prefill per prompt: ``steps(tokens, order)`` embeds each row's
    new token and runs the decoder on its past (first gathered by ``order``: beam search's source rows, which stay
    within each prompt's rows), returning the (rows, V) logits. Token types: each new token's kind; M-RoPE: the
    prompt's positions carried on per row."""

    def __init__(self, sessions: ImageTextSessions, mask: np.ndarray, rope, rows: int, step_kind, past: dict):
        self.sessions, self.mask, self.rope, self.rows, self.past = sessions, mask, rope, rows, past
        self.types = None if step_kind is None else np.full((len(mask), 1), step_kind, np.int64)

    def __call__(self, tokens: np.ndarray, order) -> np.ndarray:
        if order is not None and not np.array_equal(order, np.arange(len(order))):
            self.past = {n: a[order] for n, a in self.past.items()}
        self.mask = np.concatenate([self.mask, np.ones((len(self.mask), 1), np.int64)], axis=1)
        s = self.sessions
        embeds = s.embed.run(None, {"input_ids": np.asarray(tokens)[:, None].astype(np.int64)})[0]
        positions = None if self.rope is None else np.repeat(self.rope.step(), self.rows, axis=1)
        logits, *present = s.decoder.run(None, s.decoder_feed(embeds, self.mask, self.types, self.past, positions))
        self.past = dict(zip(s.past_names, present))
        return logits[:, -1]
