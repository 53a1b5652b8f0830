"""ONNX export of the encoder-decoders (T5, LongT5, BART, Marian, mBART, M2M100, NLLB-MoE, Pegasus, PEGASUS-X,
ProphetNet, Whisper) with their KV caches, for generation in onnxruntime.

``export_seq2seq(model, DIR)`` writes two graphs, each verified in onnxruntime against forgegrad:

- ``DIR/encoder.onnx``: ``input_ids``, ``attention_mask`` (batch, encoder_sequence) int64 ->
  ``last_hidden_state`` (batch, encoder_sequence, d_model) and every decoder layer's cross-attention keys and
  values ``present.<i>.encoder.key`` / ``.value`` (batch, heads, encoder_sequence, head_dim): computed once
  per input, as ``generate`` computes them;
- ``DIR/decoder.onnx``: ``input_ids`` (batch, sequence) the new decoder tokens, ``encoder_attention_mask``
  (batch, encoder_sequence), and per layer ``past_key_values.<i>.decoder.key`` / ``.value`` (batch, heads,
  past_sequence, head_dim; zero-length on the first call) and ``past_key_values.<i>.encoder.key`` /
  ``.value`` (the encoder graph's outputs) -> ``logits`` and ``present.<i>.decoder.key`` / ``.value``
  (past_sequence + sequence long): the next call's past.

The names are Hugging Face optimum's. The decoder's positions (BART's learned and Marian's fixed tables,
T5's bucketed relative distances, from a table of the buckets computed as the eager model computes them)
and masks are computed in the graph from the cache's length and the inputs. ``generate_onnx_seq2seq`` runs
the pair (greedy, sampled, or beam search: ``onnx_beam``). ProphetNet's decoder caches its main stream and gives the
first predicting stream's logits, as its generate steps (prophetnet.py); NLLB-MoE's routers route in the graph, the
experts run on their capacity's slots with a fixed expert_capacity, else in a Loop over the experts in use, each on
the rows that chose it (nllb_moe.py: NllbMoeSparseMLP.dense_forward; _moe_export.py).

A block-local encoder (LongT5, PEGASUS-X) names how its sequence is cut (``graph_axis_divisors``: the floor and ceil
divisors of ``encoder_sequence``, passed to the exporter, so that the blocks and global tokens of any length are
computed in the graph) and, optionally, an example length that reaches its global path (``graph_example_length``).

Whisper's graphs differ in their inputs: the encoder reads ``input_features`` (batch, num_mel_bins, frames;
the model's ``graph_encoder_inputs``), and its decoder has no ``encoder_attention_mask`` (every encoder position
is read) but a ``decoder_attention_mask`` (batch, past_sequence + sequence) int64 after ``input_ids``: 0 at left
padding (prompts of different lengths in a batch). ``export_seq2seq(..., cross_attentions=True)`` adds the
decoder output ``cross_attentions`` (batch, alignment heads, sequence, encoder_sequence): the cross-attention
probabilities of generation_config.json's alignment heads, in their order, for token timestamps. Its generation
settings travel in the decoder graph's metadata (``onnx_whisper``).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ... import nn
from ...tensor import Tensor
from ._layers import PastKeyValues
from .generation import UNSET
from .onnx_beam import beam_onnx_seq2seq
from .onnx_decoding import (TokenPicker, check_prompt, decoding, logits_vocab, processors,
                            save_generation_config, session_of)

__all__ = ["export_seq2seq", "generate_onnx_seq2seq"]


def _check(model, who: str):
    unsupported = getattr(model, "onnx_unsupported", None)  # an encoder-decoder whose graphs are not written yet
    if unsupported:
        raise NotImplementedError(f"{who}: {type(model).__name__}: {unsupported}")
    if not (callable(getattr(model, "encode_graph", None)) and callable(getattr(model, "decode_graph", None))):
        raise TypeError(f"{who}: {type(model).__name__} is not an encoder-decoder with encode_graph / decode_graph "
                        "(T5, LongT5, BART, Marian, mBART, M2M100, NLLB-MoE, Pegasus, PEGASUS-X, ProphetNet or "
                        "Whisper)")


def _masked(model) -> bool:
    """Whether the encoder reads a padding mask (token inputs) that the decoder's cross-attention then takes
    (``encoder_attention_mask``): not Whisper's, whose inputs are features of a whole window."""
    return not callable(getattr(model, "graph_encoder_inputs", None))


class EncoderWithCross(nn.Module):
    """``forward(*inputs)`` -> (encoder states, k0, v0, k1, v1, ...): the encoder on the encoder graph's inputs
    (``input_ids``, ``attention_mask``; Whisper's ``input_features``) and every decoder layer's cross-attention
    keys and values."""

    def __init__(self, model):
        super().__init__()
        _check(model, "export_seq2seq")
        self.seq2seq = model

    def forward(self, *inputs: Tensor):
        states = self.seq2seq.encode_graph(*inputs)
        return (states, *(t for kv in self.seq2seq.cross_kv(states) for t in kv))


class Seq2SeqDecoderWithPast(nn.Module):
    """``forward(input_ids, encoder_attention_mask, dk0, dv0, ek0, ev0, ...)`` -> (logits, dk0', dv0', ...); no
    ``encoder_attention_mask`` for a model whose encoder reads no mask (Whisper), and ``decoder_attention_mask``
    after ``input_ids`` for one whose graph takes it (Whisper's ``graph_decoder_mask``). ``cross_attentions``: the
    alignment heads' cross-attention probabilities as a last output (Whisper's ``graph_alignment_heads``)."""

    def __init__(self, model, logits_to_keep: int = 0, cross_attentions: bool = False):
        super().__init__()
        _check(model, "export_seq2seq")
        if isinstance(logits_to_keep, bool) or logits_to_keep not in (0, 1):
            raise ValueError(f"export_seq2seq: logits_to_keep must be 0 (every position's logits) or 1 (the "
                             f"last position's), got {logits_to_keep!r}")
        if not isinstance(cross_attentions, bool):
            raise TypeError(f"export_seq2seq: cross_attentions must be a bool, got {cross_attentions!r}")
        if cross_attentions and not callable(getattr(model, "graph_alignment_heads", None)):
            raise ValueError(f"export_seq2seq: cross_attentions=True outputs Whisper's alignment heads (token "
                             f"timestamps); {type(model).__name__} has none")
        self.seq2seq, self.logits_to_keep, self.masked = model, logits_to_keep, _masked(model)
        self.decoder_mask = _decoder_masked(model)
        try:
            self.heads = model.graph_alignment_heads() if cross_attentions else None
        except ValueError as e:
            raise ValueError(f"export_seq2seq: cross_attentions=True: {e}") from None

    def forward(self, input_ids: Tensor, *inputs: Tensor):
        mask, inputs = (inputs[0], inputs[1:]) if self.masked else (None, inputs)
        kw = {}
        if self.decoder_mask:
            kw["decoder_attention_mask"], inputs = inputs[0], inputs[1:]
        if self.heads is not None:
            kw["alignment_heads"] = self.heads
        cache = PastKeyValues(list(inputs[0::4]), list(inputs[1::4]))
        cross = list(zip(inputs[2::4], inputs[3::4]))
        out = self.seq2seq.decode_graph(input_ids, mask, cross, cache, self.logits_to_keep, **kw)
        logits, extra = (out, ()) if self.heads is None else (out[0], out[1:])
        return (logits, *(t for kv in zip(cache.keys, cache.values) for t in kv), *extra)


def _decoder_masked(model) -> bool:
    """Whether the decoder graph takes ``decoder_attention_mask`` (Whisper's: left-padded prompts)."""
    return bool(getattr(model, "graph_decoder_mask", False))


def _layers(model) -> int:
    return len(model.new_cache(1, 1).keys)


def _names(model):
    n = _layers(model)
    cross = [f"present.{i}.encoder.{kv}" for i in range(n) for kv in ("key", "value")]
    past = [f"past_key_values.{i}.{side}.{kv}" for i in range(n) for side in ("decoder", "encoder")
            for kv in ("key", "value")]
    present = [f"present.{i}.decoder.{kv}" for i in range(n) for kv in ("key", "value")]
    return cross, past, present


def _encoder_inputs(model, rng, B: int, S: int):
    """The encoder graph's (example arrays, input names, dynamic axes, verification sizes): token ids and their
    mask (the second input right-padded, as T5's and BART's tokenizers pad), or the model's own
    (``graph_encoder_inputs``: Whisper's features)."""
    if not _masked(model):
        return model.graph_encoder_inputs(rng, B)
    ids = rng.integers(2, model.vocab_size, size=(B, S), dtype=np.int64)
    mask = np.ones((B, S), np.int64)
    mask[-1, -2:] = 0
    axes = {0: "batch", 1: "encoder_sequence"}
    return ([ids, mask], ["input_ids", "attention_mask"], {"input_ids": axes, "attention_mask": axes},
            [{"batch": 1, "encoder_sequence": 9}, {"batch": 3, "encoder_sequence": 2}])


def export_seq2seq(model, directory, *, logits_to_keep: int = 0, cross_attentions: bool = False, opset: int = 17,
                   verify: bool = True, rtol: float = 1e-4, atol: float = 1e-4, seed: int = 0):
    """Write ``directory``/encoder.onnx and ``directory``/decoder.onnx (the module docstring has their inputs and
    outputs) for a T5, LongT5, BART, Marian, mBART, M2M100, NLLB-MoE, Pegasus, PEGASUS-X, ProphetNet or Whisper
    model, each verified in onnxruntime against forgegrad (the encoder at batch 1 and 3 besides the example's; the
    decoder: at the example's sizes, with no past, and a one-token step after 9 cached tokens). ``logits_to_keep=1``:
    the decoder's logits for its last position only. ``cross_attentions=True`` (Whisper; its generation_config.json's
    ``alignment_heads`` needed): the decoder also outputs the alignment heads' cross-attention probabilities
    (``cross_attentions``), which token timestamps read. The model's ``graph_metadata()`` (Whisper's generation
    settings), if it has one, is written into the decoder graph, and its generation_config.json
    (``from_pretrained``'s ``generation_config``; without one, the one transformers builds from config.json) beside
    the graphs, where ``generate_onnx_seq2seq`` reads it. Returns the two ExportReports (encoder, decoder)."""
    from ...onnx import export

    _check(model, "export_seq2seq")
    decoder = Seq2SeqDecoderWithPast(model, logits_to_keep, cross_attentions)
    os.makedirs(directory, exist_ok=True)
    cross_names, past_names, present_names = _names(model)
    rng = np.random.default_rng(seed)
    B, S, P, T = 2, 5, 3, 4
    # a block-local encoder (LongT5, PEGASUS-X): the sequence's blocks and global tokens are quotients of its length
    floor, ceil = model.graph_axis_divisors() if callable(getattr(model, "graph_axis_divisors", None)) else ({}, {})
    S_enc = model.graph_example_length() if callable(getattr(model, "graph_example_length", None)) else S
    enc_inputs, enc_names, enc_axes, enc_sizes = _encoder_inputs(model, rng, B, S_enc)
    masked, decoder_masked = _masked(model), _decoder_masked(model)
    metadata = model.graph_metadata() if callable(getattr(model, "graph_metadata", None)) else None
    was_training = model.training
    model.eval()
    try:
        enc = export(EncoderWithCross(model), tuple(Tensor._stored(a) for a in enc_inputs),
                     os.path.join(directory, "encoder.onnx"), opset=opset, input_names=enc_names,
                     output_names=["last_hidden_state"] + cross_names, dynamic_axes=enc_axes,
                     verify=verify, rtol=rtol, atol=atol, verify_sizes=enc_sizes, axis_divisors=floor,
                     axis_ceil_divisors=ceil)
        shape = model.new_cache(B, 1).keys[0].shape
        heads, dim = shape[1], shape[3]
        past = []
        for _ in range(_layers(model)):
            past += [rng.standard_normal((B, heads, P, dim)).astype(np.float32) for _ in range(2)]
            past += [rng.standard_normal((B, heads, S, dim)).astype(np.float32) for _ in range(2)]
        axes = {"input_ids": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"} if logits_to_keep else {0: "batch", 1: "sequence"}}
        head, names = [rng.integers(2, model.decoder_vocab_size, size=(B, T), dtype=np.int64)], ["input_ids"]
        if masked:
            head.append(np.concatenate([enc_inputs[1][:, :S - 2], enc_inputs[1][:, -2:]], axis=1))  # S keys
            names.append("encoder_attention_mask")
            axes["encoder_attention_mask"] = {0: "batch", 1: "encoder_sequence"}
        if decoder_masked:
            left_padded = np.ones((B, P + T), np.int64)
            left_padded[-1, :2] = 0
            head.append(left_padded)
            names.append("decoder_attention_mask")
            axes["decoder_attention_mask"] = {0: "batch", 1: "past_sequence+sequence"}
        for name in past_names:
            axes[name] = {0: "batch", 2: "past_sequence" if ".decoder." in name else "encoder_sequence"}
        for name in present_names:
            axes[name] = {0: "batch", 2: "past_sequence+sequence"}
        outputs = ["logits"] + present_names
        if cross_attentions:
            outputs.append("cross_attentions")
            axes["cross_attentions"] = {0: "batch", 2: "sequence", 3: "encoder_sequence"}
        dec = export(decoder, tuple(Tensor._stored(a) for a in head + past), os.path.join(directory, "decoder.onnx"),
                     opset=opset, input_names=names + past_names, output_names=outputs, dynamic_axes=axes,
                     verify=verify, rtol=rtol, atol=atol,
                     verify_sizes=[{"batch": 1, "sequence": 1, "past_sequence": 0, "encoder_sequence": 6},
                                   {"batch": 3, "sequence": 1, "past_sequence": 9, "encoder_sequence": 2}],
                     metadata=metadata)
    finally:
        model.train(was_training)
    save_generation_config(model, directory, "export_seq2seq")
    return enc, dec


def generate_onnx_seq2seq(encoder, decoder, input_ids, attention_mask=None, *,
                          decoder_start_token_id: Optional[int] = None, max_new_tokens: Optional[int] = None,
                          eos_token_id=UNSET, pad_token_id=UNSET, do_sample: Optional[bool] = None,
                          temperature: Optional[float] = None, top_k=UNSET, top_p=UNSET, min_p=UNSET,
                          forced_bos_token_id=UNSET, forced_eos_token_id=UNSET, num_beams: Optional[int] = None,
                          length_penalty: Optional[float] = None, early_stopping=None,
                          num_return_sequences: Optional[int] = None, repetition_penalty: Optional[float] = None,
                          no_repeat_ngram_size: Optional[int] = None, min_length: Optional[int] = None,
                          generation_config=None, tokenizer=None, **settings) -> np.ndarray:
    """Decode in onnxruntime on the graphs ``export_seq2seq`` wrote (``encoder`` and ``decoder``: sessions or
    .onnx paths): the encoder once, then the decoder once per new token on the cache it returned, from
    ``decoder_start_token_id`` (the model's; left out, the generation config's). Every other argument as
    ``generate_onnx``: ``generate``'s meaning, and given, else the generation config's (``generation_config``; left
    at None, the generation_config.json next to the decoder's .onnx file), else generate's default;
    ``forced_bos_token_id`` / ``forced_eos_token_id`` (BART's config sets them) make the first / the last of the
    ``max_new_tokens`` tokens that one, as transformers' processors do (in beam search: on the log-probabilities),
    and ``encoder_repetition_penalty`` / ``encoder_no_repeat_ngram_size`` read the encoder's input. Beam search
    reorders the decoder's own cache; the encoder's outputs are repeated per beam once. ``max_length`` in the config
    counts the start token. Returns (batch * R, 1 + new) int64, the start token first, as ``generate`` returns an
    encoder-decoder's tokens."""
    who = "generate_onnx_seq2seq"
    enc, dec = session_of(encoder), session_of(decoder)
    ids, mask = check_prompt(who, input_ids, attention_mask)
    names = [i.name for i in dec.get_inputs()]
    if names[:2] != ["input_ids", "encoder_attention_mask"] or [i.name for i in enc.get_inputs()] != [
            "input_ids", "attention_mask"]:
        raise ValueError(f"{who}: the graphs are not export_seq2seq's encoder and decoder of a text model (inputs "
                         f"{[i.name for i in enc.get_inputs()]} and {names}; Whisper's: generate_onnx_whisper)")
    if isinstance(forced_eos_token_id, (list, tuple, np.ndarray)) and len(forced_eos_token_id) == 1:
        forced_eos_token_id = int(forced_eos_token_id[0])  # transformers' one-id list
    arguments = dict(max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                     do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                     num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                     num_return_sequences=num_return_sequences, repetition_penalty=repetition_penalty,
                     no_repeat_ngram_size=no_repeat_ngram_size, min_length=min_length,
                     forced_bos_token_id=forced_bos_token_id, forced_eos_token_id=forced_eos_token_id,
                     decoder_start_token_id=decoder_start_token_id)
    d = decoding(who, decoder, generation_config, logits_vocab(dec), tokenizer, 1, arguments, settings, seq2seq=True)
    beams, new = d.beams, d.max_new_tokens
    if new == 0:
        return np.full((ids.shape[0] * beams[3], 1), d.start, np.int64)
    process = processors(d, 1 + new, ids)
    if beams[0] > 1:
        return beam_onnx_seq2seq(enc, dec, ids, mask, d.start, new, d.eos, d.pad, *beams, sampler=d.sampler,
                                 process=process, stopping=d.stopping)
    ids, mask = np.repeat(ids, beams[3], axis=0), np.repeat(mask, beams[3], axis=0)  # sampling: R draws per prompt
    B = ids.shape[0]
    pick = TokenPicker(np.full((B, 1), d.start, np.int64), new, d.eos, d.pad, d.sampler, process, d.stopping)
    cross = enc.run(None, {"input_ids": ids, "attention_mask": mask})[1:]
    feed = {"input_ids": np.ascontiguousarray(pick.sequences), "encoder_attention_mask": mask}
    it = iter(cross)
    for i in dec.get_inputs()[2:]:
        if ".encoder." in i.name:
            feed[i.name] = next(it)
        else:
            feed[i.name] = np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32)
    self_names = [n for n in names[2:] if ".decoder." in n]
    for _ in range(new):
        logits, *present = dec.run(None, feed)
        nxt = pick(logits[:, -1])
        if pick.finished:
            break
        feed = {**feed, "input_ids": nxt[:, None], **dict(zip(self_names, present))}
    return pick.sequences.copy()
