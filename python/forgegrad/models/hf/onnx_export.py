"""ONNX export of a decoder-only Hugging Face model with its KV cache, for generation in onnxruntime.

``export_with_past(model, "decoder.onnx")`` writes one graph that serves both the prompt (no past:
``past_sequence`` 0) and every later step, with the input and output names of Hugging Face optimum's
decoder exports (some of which also take ``position_ids``; here the graph computes them):

- ``input_ids`` (batch, sequence) int64: the new tokens;
- ``attention_mask`` (batch, past_sequence + sequence) int64: 1 for a token, 0 for padding, over the
  cached and the new tokens;
- ``past_key_values.<i>.key`` / ``.value`` (batch, kv_heads, past_sequence, head_dim) float32, layer i's
  cache (zero-length on the first call);
- outputs ``logits`` (batch, sequence, vocab; with ``logits_to_keep=1``: (batch, 1, vocab)) and
  ``present.<i>.key`` / ``.value`` (batch, kv_heads, past_sequence + sequence, head_dim): the next call's past.

Positions and the attention bias are computed in the graph from the mask, as transformers' ``generate``
does (a token's position is the count of tokens before it; padding keys are masked, later keys too), so
left-padded batches need nothing more. The graph is traced from the model's ``forward_graph`` (the
same layers, with the cache concatenated instead of written in place) and verified in onnxruntime
against forgegrad at several sizes, the first call (no past) and a one-token step among them.
``generate_onnx`` decodes on such a graph in onnxruntime (one call on the prompt, then one per token), greedy
or sampled as ``generate`` samples, or by ``generate``'s beam search (``num_beams``: ``onnx_beam``), with every
setting ``generate`` takes resolved as it resolves them (an argument, else the generation config: by default the
generation_config.json next to the graph, else generate's default) and applied through its own processor list,
Sampler and stopping criteria (onnx_decoding.py).

Exports every decoder-only architecture of ``ARCHITECTURES`` (``decoder_architectures()`` names them, as the refusal
of another model does): GPT-2, GPT-NeoX (Pythia) and the Llama family (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 1,
2 and 3, OLMo 2 and 3, Granite, StableLM, StarCoder2, Phi), sliding windows included (each window's bias computed
once, from the same places), longrope and dynamic ropes (frequencies chosen in the graph from the call's length; a
longrope graph records in its metadata where ``generate_onnx`` recomputes the sequence) and the mixture-of-experts
decoders (routing computed in the graph, each expert in use on its routed rows: _moe_export.py).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ... import nn
from ...tensor import Tensor
from ._layers import FLOAT32_MAX, PastKeyValues, key_places
from .generation import UNSET
from .onnx_decoding import (TokenPicker, check_prompt, decoding, logits_vocab, processors,
                            save_generation_config, session_of)

__all__ = ["DecoderWithPast", "export_with_past", "generate_onnx", "input_names", "output_names"]

class DecoderWithPast(nn.Module):
    """``forward(input_ids, attention_mask, k0, v0, k1, v1, ...)`` -> ``(logits, k0', v0', ...)``:
    ``model`` (a GPT2LMHeadModel, GPTNeoXForCausalLM or LlamaForCausalLM-family model) run over a concatenated
    cache."""

    def __init__(self, model, logits_to_keep: int = 0):
        super().__init__()
        if isinstance(logits_to_keep, bool) or logits_to_keep not in (0, 1):
            raise ValueError(f"export_with_past: logits_to_keep must be 0 (every position's logits) or 1 (the "
                             f"last position's), got {logits_to_keep!r}")
        self.logits_to_keep = logits_to_keep
        if getattr(model, "takes_images", False):
            raise TypeError(f"export_with_past: model is a {type(model).__name__}, an image-text model: export it "
                            "with onnx_image_text.export_image_text (vision_encoder, embed_tokens and "
                            "decoder_model_merged graphs)")
        if not callable(getattr(model, "forward_graph", None)):
            from . import decoder_architectures
            raise TypeError(f"export_with_past: {type(model).__name__} is not a decoder-only model with a "
                            f"forward_graph (expected one of {decoder_architectures()})")
        self.decoder = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *past: Tensor):
        cache = PastKeyValues(list(past[0::2]), list(past[1::2]))
        logits = graph_logits(self.decoder, input_ids, attention_mask, cache, self.logits_to_keep)
        return (logits, *(t for kv in zip(cache.keys, cache.values) for t in kv))


def graph_logits(model, input_ids: Tensor, attention_mask: Tensor, cache: PastKeyValues, logits_to_keep: int = 0, *,
                 inputs_embeds: Tensor = None, both_ways: Tensor = None, window_bounds_both_ways: bool = True,
                 position_ids: Tensor = None):
    """``model.forward_graph`` with the positions and attention biases computed from the mask as Tensor ops (what
    an exported graph computes from its inputs), extending ``cache``. ``inputs_embeds`` (B, T, hidden): the input
    rows in place of ``input_ids``' embeddings; ``both_ways`` (B, T, past + T) 0/1: the pairs (new token, key)
    allowed besides the causal ones (an image-text model's image blocks or prefix, onnx_image_text.py), within a
    sliding window too where ``window_bounds_both_ways`` (Gemma 3), or not (PaliGemma's prefix); padding never.
    ``position_ids``: the new tokens' positions as given (Qwen2-VL's (3, B, T) M-RoPE ones, computed on the host) in
    place of the mask's."""
    first_new = cache.length  # the new tokens' columns of the mask start here
    mask = attention_mask.float()  # (B, past + T), 1 for a token
    place = key_places(mask)  # each column's index 0 .. past + T - 1
    # transformers' position ids: the tokens before this one; padding at 1 (never read); PaliGemma's from 1
    positions = (mask.cumsum(-1) - 1) * mask + (1 - mask) + getattr(model, "position_offset", 0)
    # a new token (row) may look at the keys (columns) up to its own place that are not padding, and
    # in a layer with a sliding window only at the last ``window`` places (padding counted, as transformers)
    keys, queries = place.unsqueeze(1), place[:, first_new:].unsqueeze(2)
    allowed = (keys <= queries).float() * mask.unsqueeze(1)
    biases = {}
    for window in set(model.sliding_windows) | {None}:
        inside = None if window is None else ((queries - keys) < window).float()
        if both_ways is None:
            near = allowed if window is None else allowed * inside
        else:  # (causal, windowed or not) or both ways; then not padding, and windowed where the window bounds both
            causal = (keys <= queries).float()
            if window is not None and not window_bounds_both_ways:
                causal = causal * inside
            near = (causal + both_ways - causal * both_ways) * mask.unsqueeze(1)
            if window is not None and window_bounds_both_ways:
                near = near * inside
        biases[window] = ((near - 1) * FLOAT32_MAX).unsqueeze(1)  # (B, 1, T, past + T): 0 or float32's min
    rows = {} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    if position_ids is None:
        position_ids = positions[:, first_new:].long()
    return model.forward_graph(input_ids, position_ids, biases, cache, logits_to_keep, **rows)


def _layers(model) -> int:
    return len(model.new_cache(1, 1).keys)


def input_names(model) -> list:
    """The graph's input names: input_ids, attention_mask, past_key_values.<i>.key/value per layer."""
    return ["input_ids", "attention_mask"] + [f"past_key_values.{i}.{kv}" for i in range(_layers(model))
                                              for kv in ("key", "value")]


def output_names(model) -> list:
    """The graph's output names: logits, present.<i>.key/value per layer."""
    return ["logits"] + [f"present.{i}.{kv}" for i in range(_layers(model)) for kv in ("key", "value")]


def _example(model, batch: int, past: int, tokens: int, seed: int):
    """Token ids, a mask with one left-padded row and random past keys/values."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model.vocab_size, size=(batch, tokens), dtype=np.int64)
    mask = np.ones((batch, past + tokens), np.int64)
    if batch > 1:
        mask[-1, :min(2, past)] = 0
    shape = model.new_cache(batch, 1).keys[0].shape
    kv = [rng.standard_normal((batch, shape[1], past, shape[3])).astype(np.float32)
          for _ in range(2 * _layers(model))]
    return [ids, mask] + kv


def export_with_past(model, path, *, logits_to_keep: int = 0, opset: int = 17, verify: bool = True,
                     rtol: float = 1e-4, atol: float = 1e-4, verify_sizes: Sequence[dict] = None, seed: int = 0):
    """Export ``model`` (a loaded GPT-2 or Llama-family checkpoint) with its KV cache as inputs and
    outputs (the module docstring has the graph's names and shapes) and, with ``verify``, check it in
    onnxruntime against forgegrad: at the example's sizes (batch 2, 3 cached tokens, 4 new, one row
    left-padded) and at ``verify_sizes`` (default: a first call with no past, a one-token step after 9
    cached tokens and batch 3, and 7 new after 7 cached). ``logits_to_keep=1`` makes ``logits`` (batch, 1,
    vocab), the last position's only: all that greedy or sampled generation reads, and a prompt's LM head
    no longer costs one vocabulary-wide GEMV per token. Returns the ExportReport of
    ``forgegrad.onnx.export``; raises as it does (an unsupported layer: UnsupportedOpError, naming it). The
    checkpoint's generation_config.json (``from_pretrained``'s ``model.generation_config``; without one, the one
    transformers builds from config.json) is written beside the graph, where ``generate_onnx`` reads it:
    the graph decodes as the checkpoint does.
    """
    from ...onnx import export

    names, outs = input_names(model), output_names(model)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "past_sequence+sequence"},
            "logits": {0: "batch"} if logits_to_keep else {0: "batch", 1: "sequence"}}
    for n in names[2:]:
        axes[n] = {0: "batch", 2: "past_sequence"}
    for n in outs[1:]:
        axes[n] = {0: "batch", 2: "past_sequence+sequence"}
    if verify_sizes is None:
        verify_sizes = [{"batch": 1, "past_sequence": 0, "sequence": 5},
                        {"batch": 3, "past_sequence": 9, "sequence": 1},
                        {"batch": 2, "past_sequence": 7, "sequence": 7}]
    example = tuple(Tensor._stored(a) for a in _example(model, 2, 3, 4, seed))
    was_training = model.training
    try:
        report = export(DecoderWithPast(model.eval(), logits_to_keep), example, path, opset=opset, dynamic_axes=axes,
                        input_names=names, output_names=outs, verify=verify, rtol=rtol, atol=atol,
                        verify_sizes=list(verify_sizes), metadata=_metadata(model))
    finally:
        model.train(was_training)
    save_generation_config(model, os.path.dirname(os.path.abspath(os.fspath(path))), "export_with_past")
    return report


RECOMPUTE_KEY = "forgegrad.recompute_cache_at"


def _metadata(model) -> dict:
    """What generate_onnx needs to know beyond the graph: the length past which a longrope model (Phi-3)
    recomputes its whole sequence (``recompute_cache_at``), as ``generate`` does."""
    switch = getattr(model, "recompute_cache_at", None)
    return {} if switch is None else {RECOMPUTE_KEY: str(int(switch))}


def _recompute_at(session):
    value = session.get_modelmeta().custom_metadata_map.get(RECOMPUTE_KEY)
    return None if value is None else int(value)


def generate_onnx(session, input_ids, attention_mask=None, max_new_tokens: Optional[int] = None, eos_token_id=UNSET,
                  pad_token_id=UNSET, do_sample: Optional[bool] = None, temperature: Optional[float] = None,
                  top_k=UNSET, top_p=UNSET, num_beams: Optional[int] = None, length_penalty: Optional[float] = None,
                  early_stopping=None, min_p=UNSET, num_return_sequences: Optional[int] = None, *,
                  repetition_penalty: Optional[float] = None, no_repeat_ngram_size: Optional[int] = None,
                  min_length: Optional[int] = None, forced_bos_token_id=UNSET, forced_eos_token_id=UNSET,
                  generation_config=None, tokenizer=None, pixel_values=None, token_type_ids=None,
                  image_grid_thw=None, image_sizes=None, pixel_values_videos=None, video_grid_thw=None,
                  second_per_grid_ts=None, **settings) -> np.ndarray:
    """Decoding in onnxruntime on a graph written by ``export_with_past``: ``session`` (an
    ``onnxruntime.InferenceSession`` or the .onnx path) runs once on the prompt (no past) and once per
    new token on the cache it returned, choosing each token as ``generate`` chooses it (onnx_decoding.py): its
    processors, its Sampler (after ``forgegrad.manual_seed(s)`` a draw is ``generate``'s after the same seed) and its
    beam search (``num_beams`` > 1: ``onnx_beam``, each beam's cache gathered from its source beam's).

    Every argument has ``generate``'s meaning and checks, and is resolved as ``generate`` resolves it: given, it
    wins (None given: ``eos_token_id`` none, ``pad_token_id`` the first end token, ``top_k`` / ``top_p`` / ``min_p``
    no filter, the forced tokens none; each of generate's further settings off); left out, the generation config's
    (``generation_config``: a dict such as a model's ``generation_config``, a generation_config.json or the
    directory holding one; left at None, the generation_config.json next to the .onnx file, ``session`` given as a
    path, where there is one); else generate's default: 20 new tokens (or the config's ``max_length`` less the
    prompt), no end token, greedy, temperature 1.0, ``top_k`` 50 when sampling, 1 beam, ``length_penalty`` 1.0,
    ``early_stopping`` False, 1 sequence, no repetition penalty, n-gram ban, minimum length or forced token.

    A row that produced an end token (``eos_token_id``: an int or a list) continues with ``pad_token_id`` until
    every row has, or until ``max_new_tokens``. ``num_return_sequences`` R: each prompt's R best hypotheses (R <=
    ``num_beams``), or R draws when sampling. ``repetition_penalty``, ``no_repeat_ngram_size``, ``min_length``,
    ``forced_bos_token_id`` / ``forced_eos_token_id`` and generate's further settings as keyword arguments
    (``suppress_tokens``, ``begin_suppress_tokens``, ``bad_words_ids``, ``sequence_bias``,
    ``encoder_repetition_penalty``, ``encoder_no_repeat_ngram_size`` (the prompt's tokens and n-grams),
    ``min_new_tokens``, ``exponential_decay_length_penalty``, ``remove_invalid_values``, ``typical_p``,
    ``epsilon_cutoff``, ``eta_cutoff``, ``top_h``, ``watermarking_config``, ``renormalize_logits``, ``stop_strings``
    (with ``tokenizer``) and ``max_time``): generate's processors, warpers and stopping criteria, in transformers'
    order (``guidance_scale``, which runs the model twice, is refused). Returns the prompt
    followed by the new tokens, (batch * R, prompt + new) int64, R rows per prompt.

    An image-text model's graphs (``session``: the folder ``export_image_text`` wrote, or its ImageTextSessions)
    decode with ``pixel_values``, ``token_type_ids``, (Qwen2-VL) ``image_grid_thw`` and videos
    (``pixel_values_videos``, ``video_grid_thw``, Qwen2.5-VL's ``second_per_grid_ts``) and (LLaVA-NeXT)
    ``image_sizes`` as ``generate`` takes them (onnx_image_text.py).
    """
    from .onnx_image_text import ImageTextSessions, generate_image_text_onnx, is_image_text_folder
    if isinstance(session, ImageTextSessions) or is_image_text_folder(session):
        return generate_image_text_onnx(
            session, input_ids, attention_mask, pixel_values, token_type_ids, max_new_tokens, eos_token_id,
            pad_token_id, do_sample, temperature, top_k, top_p, min_p, num_beams, num_return_sequences,
            repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size, min_length=min_length,
            length_penalty=length_penalty, early_stopping=early_stopping, forced_bos_token_id=forced_bos_token_id,
            forced_eos_token_id=forced_eos_token_id, generation_config=generation_config, tokenizer=tokenizer,
            image_grid_thw=image_grid_thw, image_sizes=image_sizes, pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw, second_per_grid_ts=second_per_grid_ts, **settings)
    if any(v is not None for v in (pixel_values, token_type_ids, image_grid_thw, image_sizes, pixel_values_videos,
                                   video_grid_thw, second_per_grid_ts)):
        raise TypeError("generate_onnx: pixel_values / token_type_ids / image_grid_thw / image_sizes / "
                        "pixel_values_videos / video_grid_thw / second_per_grid_ts go with an image-text model's "
                        "graphs (the folder export_image_text wrote); this graph is a text decoder's")
    graph = session
    session = session_of(session)
    ids, mask = check_prompt("generate_onnx", input_ids, attention_mask)
    inputs = session.get_inputs()
    past_names = [i.name for i in inputs if i.name.startswith("past_key_values.")]
    if [i.name for i in inputs[:2]] != ["input_ids", "attention_mask"] or not past_names:
        raise ValueError("generate_onnx: the graph's inputs are not export_with_past's (input_ids, attention_mask, "
                         f"past_key_values.<i>.key/value): {[i.name for i in inputs]}")
    from .onnx_beam import beam_onnx
    T = ids.shape[1]
    arguments = dict(max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                     do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                     num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                     num_return_sequences=num_return_sequences, repetition_penalty=repetition_penalty,
                     no_repeat_ngram_size=no_repeat_ngram_size, min_length=min_length,
                     forced_bos_token_id=forced_bos_token_id, forced_eos_token_id=forced_eos_token_id)
    d = decoding("generate_onnx", graph, generation_config, logits_vocab(session), tokenizer, T, arguments, settings)
    beams, prompts, new = d.beams, ids, d.max_new_tokens
    if new == 0 or beams[0] == 1:  # sampling: R draws per prompt (beam search expands its own rows)
        ids, mask = np.repeat(ids, beams[3], axis=0), np.repeat(mask, beams[3], axis=0)
    if new == 0:
        return ids
    process = processors(d, T + new, prompts, padding=mask.argmax(axis=1), prompt_length=T)
    if beams[0] > 1:
        return beam_onnx(session, ids, mask, new, d.eos, d.pad, *beams, sampler=d.sampler, process=process,
                         stopping=d.stopping)
    B = ids.shape[0]
    pick = TokenPicker(ids, new, d.eos, d.pad, d.sampler, process, d.stopping)
    empty = {i.name: np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32) for i in inputs[2:]}
    feed = {"input_ids": ids, "attention_mask": mask, **empty}
    switch = _recompute_at(session)
    for _ in range(new):
        logits, *present = session.run(None, feed)
        nxt = pick(logits[:, -1])
        if pick.finished:
            break
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], axis=1)
        if switch is not None and mask.shape[1] - 1 == switch:
            # the sequence now reaches past a longrope model's original context, where its frequencies change:
            # every position is recomputed with the long ones (as generate and transformers' Phi-3 do)
            feed = {"input_ids": np.ascontiguousarray(pick.sequences), "attention_mask": mask, **empty}
            continue
        feed = {"input_ids": nxt[:, None], "attention_mask": mask, **dict(zip(past_names, present))}
    return pick.sequences.copy()
