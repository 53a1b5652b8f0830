"""Qwen2-VL's and Qwen2.5-VL's graphs for ``export_image_text`` (onnx_image_text.py), in transformers.js's layout, and
the M-RoPE positions ``generate_image_text_onnx`` computes for them on the host.

- ``vision_encoder.onnx``: ``pixel_values`` (num_patches, C * temporal_patch_size * patch_size**2) float32, the
  processor's flattened patches, and ``grid_thw`` (num_images, 3) int64 (the processor's ``image_grid_thw``, under
  the name transformers.js feeds it) -> ``image_features`` (num_patches / merge**2, hidden): the rows of the
  prompt's image tokens, in order. Everything the eager tower computes on the host from the grid is computed in the
  graph from ``grid_thw``: each patch's image, frame and (row, column) in the processor's merge-block order (the
  2-D rotary embedding), and the attention's runs as an additive (N, N) bias (the patches of one frame; Qwen2.5-VL's
  windowed blocks: of one window of one frame) in place of the eager tower's per-run attention. Qwen2.5-VL's eager
  tower reorders the patches window by window and back; the graph keeps the processor's order (a merge unit's
  patches stay consecutive, each patch keeps its rotary position, attention does not depend on the keys' order), so
  it gives the same rows. The bias is N x N: memory grows with the square of the patches of one call.
- ``decoder_model_merged.onnx``: ``inputs_embeds``, ``attention_mask``, ``position_ids`` (3, batch, sequence) int64
  (M-RoPE's temporal, row and column positions) and the past -> logits and the present. The positions come from
  the host, as in transformers.js: for a prompt transformers' get_rope_index (``qwen2_vl.rope_index``) of the ids,
  the grids and the mask, each row's ``rope_deltas`` kept; for a later token its text position plus that delta
  (``MRopePositions``).

Videos go through the same vision graph (a video's ``video_grid_thw`` counts frame groups, as an image's frames);
their rows replace the video tokens and their temporal positions step per frame group by 1 (Qwen2-VL) or by
Qwen2.5-VL's tokens_per_second x ``second_per_grid_ts`` (``video_steps``). The decoder's metadata records what the
host needs for them: the video token id and Qwen2.5-VL's tokens_per_second (``mrope_metadata``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ... import nn
from ...factories import cat
from ...tensor import Tensor
from ._layers import FLOAT32_MAX, PastKeyValues
from .onnx_export import graph_logits
from .qwen2_vl import rope_index

__all__ = ["MRopePositions", "Qwen2VLDecoderWithPast", "Qwen2VLVisionEncoder", "export_patch_vision", "is_mrope_model",
           "mrope_metadata", "video_steps"]

MROPE_MERGE_KEY = "forgegrad.mrope_merge_size"  # the decoder graph's metadata: take 3-D positions, this merge size
VIDEO_TOKEN_KEY = "forgegrad.video_token_id"  # the video tokens' id (folders exported before videos lack it)
TOKENS_PER_SECOND_KEY = "forgegrad.tokens_per_second"  # Qwen2.5-VL's: a video's temporal positions per second


def is_mrope_model(model) -> bool:
    return getattr(model, "architecture", "") in ("Qwen2VLForConditionalGeneration",
                                                  "Qwen2_5_VLForConditionalGeneration")


def mrope_metadata(model) -> dict:
    """The decoder graph's metadata for the host's M-RoPE positions: the merge size, the video token id, and
    Qwen2.5-VL's tokens_per_second (checked as the eager model checks it; Qwen2-VL steps a video by 1)."""
    out = {MROPE_MERGE_KEY: str(int(model.merge)), VIDEO_TOKEN_KEY: str(int(model.video_token_id))}
    steps = model._video_steps(None, 1)  # Qwen2.5-VL: [tokens_per_second]; Qwen2-VL: None
    if steps is not None:
        out[TOKENS_PER_SECOND_KEY] = repr(float(steps[0]))
    return out


def video_steps(tokens_per_second: Optional[float], second_per_grid_ts, n_videos: int, who: str):
    """Each video's temporal position step per frame group, as the eager model's ``_video_steps``: None (1) for
    Qwen2-VL (no ``tokens_per_second``: ``second_per_grid_ts`` refused), else tokens_per_second x each video's
    seconds per frame group (default 1)."""
    if tokens_per_second is None:
        if second_per_grid_ts is not None:
            raise TypeError(f"{who}: second_per_grid_ts is Qwen2.5-VL's (this folder's Qwen2-VL graphs step a "
                            "video's positions by one per frame group)")
        return None
    if second_per_grid_ts is None:
        return np.full(n_videos, tokens_per_second)
    raw = second_per_grid_ts.numpy() if isinstance(second_per_grid_ts, Tensor) else second_per_grid_ts
    seconds = np.asarray(raw, np.float64).reshape(-1)
    if seconds.shape != (n_videos,) or not np.isfinite(seconds).all() or (seconds < 0).any():
        raise ValueError(f"{who}: second_per_grid_ts must be {n_videos} non-negative numbers (one per video of "
                         f"video_grid_thw), got {seconds.shape[0]}: {seconds.tolist()[:4]}")
    return tokens_per_second * seconds


def _floor_div(a: Tensor, b) -> Tensor:
    """floor(a / b) of non-negative integer-valued float32 tensors (b >= 1), exactly: the float quotient truncated
    (a Cast), less one where its rounding reached the next integer (ONNX has no integer floor division that numpy's
    truncating float Cast also gives, and the values stay far below 2**24)."""
    q = (a / b).long().float()
    return q - (q * b > a).float()


def _same(key: Tensor) -> Tensor:
    """(N, N) 1.0 where two patches have the same integer-valued ``key`` (N,)."""
    return ((key.unsqueeze(1) - key.unsqueeze(0)).abs() < 0.5).float()


class Qwen2VLVisionEncoder(nn.Module):
    """``forward(pixel_values (N, patch_dim), grid_thw (num_images, 3) int64)`` -> (N / merge**2, hidden): the tower
    and merger of ``model.visual`` with the grid's layout computed as Tensor ops (the module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor, grid_thw: Tensor) -> Tensor:
        tower = self.model.visual
        c, m = tower.config, tower.merge
        g = grid_thw.float()
        t, h, w = g[:, 0], g[:, 1], g[:, 2]  # (I,) each
        area = h * w
        ends = (t * area).cumsum(0)  # each image's patches end here
        starts = ends - t * area
        # (N,) each patch's index (ones from a comparison: finite whatever the pixels hold, NaN or infinity)
        n = ((pixel_values[:, 0] != 0).float() * 0 + 1).cumsum(0) - 1
        mine = (n.unsqueeze(1) >= starts.unsqueeze(0)).float() * (n.unsqueeze(1) < ends.unsqueeze(0)).float()

        def of_image(v):  # (N,): each patch's image's value (one 1.0 per row of ``mine``: an exact pick)
            return (mine * v.unsqueeze(0)).sum(-1)

        start, hp, wp = of_image(starts), of_image(h).clamp(min=1.0), of_image(w).clamp(min=float(m))
        local = n - start
        frame = _floor_div(local, hp * wp)
        in_frame = local - frame * hp * wp
        unit = _floor_div(in_frame, float(m * m))  # the merge unit (m x m patches, consecutive) in the frame
        within = in_frame - unit * (m * m)
        per_row = _floor_div(wp, float(m))  # units per row of the frame
        unit_row = _floor_div(unit, per_row)
        unit_col = unit - unit_row * per_row
        sub_row = _floor_div(within, float(m))
        row, col = unit_row * m + sub_row, (unit_col * m) + (within - sub_row * m)
        inv = Tensor._wrap(tower.inv_freq)
        freqs = cat([row.unsqueeze(1) * inv, col.unsqueeze(1) * inv], dim=-1)  # (N, head_dim / 2): rows', columns'
        emb = cat([freqs, freqs], dim=-1).unsqueeze(0).unsqueeze(0)
        cos, sin = emb.cos(), emb.sin()
        same_frame = _same(start + frame * hp * wp)  # the frame's first patch names it
        frame_bias = ((same_frame - 1) * FLOAT32_MAX).unsqueeze(0).unsqueeze(0)  # (1, 1, N, N)
        biases = [frame_bias] * len(tower.blocks)
        if tower.v2_5:  # the blocks not in fullatt_block_indexes attend within a window of the frame
            side = float(c["window_size"] // m // c["patch_size"])
            same_window = same_frame * _same(_floor_div(unit_row, side)) * _same(_floor_div(unit_col, side))
            window_bias = ((same_window - 1) * FLOAT32_MAX).unsqueeze(0).unsqueeze(0)
            full = set(c["fullatt_block_indexes"])
            biases = [frame_bias if i in full else window_bias for i in range(len(tower.blocks))]
        x = tower.patch_embed(pixel_values)
        for block, bias in zip(tower.blocks, biases):
            x = block(x, cos, sin, bias)
        # whole merge units only (all of a valid input: the export's other-size traces take patch counts that are
        # not multiples of merge**2, so that the unit count becomes floor(patches / merge**2) in the graph)
        return tower.merger(x[:x.shape[0] // (m * m) * (m * m)])


class Qwen2VLDecoderWithPast(nn.Module):
    """``forward(inputs_embeds, attention_mask, position_ids (3, B, T), k0, v0, ...)`` -> ``(logits, k0', v0',
    ...)``: export_with_past's decoder fed rows and M-RoPE positions."""

    def __init__(self, model, logits_to_keep: int = 0):
        super().__init__()
        self.decoder, self.logits_to_keep = model, logits_to_keep

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor, *past: Tensor):
        cache = PastKeyValues(list(past[0::2]), list(past[1::2]))
        logits = graph_logits(self.decoder, None, attention_mask, cache, self.logits_to_keep,
                              inputs_embeds=inputs_embeds, position_ids=position_ids)
        return (logits, *(t for kv in zip(cache.keys, cache.values) for t in kv))


def vision_example(model, seed: int):
    """(pixel_values, grid_thw) of two images of different grids, the second of two frames, as the processor lays
    them out."""
    tower = model.visual
    m = tower.merge
    grid = np.array([[1, 2 * m, 3 * m], [2, m, 2 * m]], np.int64)
    n = int(grid.prod(axis=1).sum())
    pixels = np.random.default_rng(seed).standard_normal((n, tower.patch_dim)).astype(np.float32)
    return pixels, grid


def vision_checks(model, seed: int):
    """[(pixel_values, grid_thw)]: the layouts the export checks the vision graph at against the eager tower
    (``model.image_features``): one image, three of different shapes, one image of two frames, and for Qwen2.5-VL
    one larger than a window."""
    m = model.visual.merge
    c = model.visual.config
    grids = [[[1, m, m]], [[1, 3 * m, m], [1, m, 2 * m], [1, 2 * m, 2 * m]], [[2, m, 3 * m]]]
    if model.visual.v2_5:
        side = c["window_size"] // c["patch_size"]  # patches per window side
        grids.append([[1, side + m, 2 * side + m]])
    rng = np.random.default_rng(seed + 7)
    out = []
    for grid in grids:
        g = np.array(grid, np.int64)
        out.append((rng.standard_normal((int(g.prod(axis=1).sum()), model.visual.patch_dim)).astype(np.float32), g))
    return out


def decoder_example(model, ids: np.ndarray, seed: int) -> np.ndarray:
    """(3, B, T) int64 positions for the decoder's example: the three components differing (as an image's)."""
    rng = np.random.default_rng(seed + 2)
    return np.sort(rng.integers(0, 3 * ids.shape[1] + 4, size=(3, *ids.shape)), axis=-1).astype(np.int64)


def export_patch_vision(model, path: str, seed: int, common: dict, who: str):
    """The vision graph, written to ``path``: traced on two images, verified by export at other patch and image counts
    (the graph against the same Tensor ops, on the verifier's random grids), then, with ``common["verify"]``, against
    the eager tower (``model.image_features``) at the consistent layouts of ``vision_checks``. ``common``: export's
    opset, verify, rtol and atol. Returns export's report."""
    from ...autograd import no_grad
    from ...onnx import OnnxVerificationError, export

    pixels, grid = vision_example(model, seed)
    unit = model.merge ** 2
    report = export(Qwen2VLVisionEncoder(model), (Tensor._stored(pixels), Tensor._stored(grid)), path,
                    dynamic_axes={"pixel_values": {0: "patches"}, "grid_thw": {0: "images"},
                                  "image_features": {0: "tokens"}},
                    input_names=["pixel_values", "grid_thw"], output_names=["image_features"],
                    axis_divisors={"patches": unit}, verify_sizes=[{"patches": 2 * unit, "images": 1}], **common)
    if common["verify"]:
        import onnxruntime as ort
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        for x, g in vision_checks(model, seed):
            got = session.run(None, {"pixel_values": x, "grid_thw": g})[0]
            with no_grad():
                want = model.image_features(x, g).numpy()
            if got.shape != want.shape or not np.allclose(got, want, rtol=common["rtol"], atol=common["atol"]):
                err = np.abs(got - want).max() if got.shape == want.shape else f"shape {got.shape} != {want.shape}"
                raise OnnxVerificationError(
                    f"{who}: {path}: onnxruntime's image_features differ from the eager vision tower's for "
                    f"grid_thw {g.tolist()} (max abs error {err})", report)
    return report


class MRopePositions:
    """The decoder graph's position_ids during decoding, as forgegrad's generate gives them to the model: the
    prompt's from get_rope_index where it holds images or videos (``rope_index``: each row's ``deltas`` kept; the
    videos' tokens ``video_token_id``, grids ``video_grid`` and temporal steps ``video_steps``), else its text
    positions (real tokens from 0, padding 1) on all three components; each later token's text position plus its
    row's delta."""

    def __init__(self, ids: np.ndarray, mask: np.ndarray, image_token_id: int, grid: Optional[np.ndarray],
                 merge: int, who: str, *, video_token_id: Optional[int] = None,
                 video_grid: Optional[np.ndarray] = None, video_steps: Optional[np.ndarray] = None):
        text = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1)
        self.last = text[:, -1].copy()
        if grid is None and video_grid is None:
            self.prompt = np.broadcast_to(text, (3, *text.shape)).astype(np.int64)
            self.deltas = np.zeros(ids.shape[0], np.int64)
        else:
            video = None if video_token_id is None else ids == video_token_id
            self.prompt, self.deltas = rope_index(ids == image_token_id, grid, merge, mask, who, video=video,
                                                  video_grid=video_grid, video_steps=video_steps)

    def step(self) -> np.ndarray:
        """The next token's (3, B, 1) positions."""
        self.last = self.last + 1
        return np.broadcast_to((self.last + self.deltas)[None, :, None], (3, len(self.last), 1)).astype(np.int64)
