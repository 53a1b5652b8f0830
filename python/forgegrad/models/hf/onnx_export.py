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
or sampled as ``generate`` samples, or by ``generate``'s beam search (``num_beams``: ``onnx_beam``).

Exports GPT-2 and the Llama family (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 1, 2 and 3), sliding
windows included (each window's bias computed once, from the same places), longrope and dynamic ropes
(frequencies chosen in the graph from the call's length; a longrope graph records in its metadata where
``generate_onnx`` recomputes the sequence) and the mixture-of-experts decoders (routing computed in the graph,
``SparseMoeBlock.dense_forward``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ... import nn
from ...tensor import Tensor
from ._layers import FLOAT32_MAX, PastKeyValues, key_places

__all__ = ["DecoderWithPast", "export_with_past", "generate_onnx", "input_names", "output_names"]

class DecoderWithPast(nn.Module):
    """``forward(input_ids, attention_mask, k0, v0, k1, v1, ...)`` -> ``(logits, k0', v0', ...)``:
    ``model`` (a GPT2LMHeadModel or LlamaForCausalLM-family model) run over a concatenated cache."""

    def __init__(self, model, logits_to_keep: int = 0):
        super().__init__()
        if isinstance(logits_to_keep, bool) or logits_to_keep not in (0, 1):
            raise ValueError(f"export_with_past: logits_to_keep must be 0 (every position's logits) or 1 (the "
                             f"last position's), got {logits_to_keep!r}")
        self.logits_to_keep = logits_to_keep
        if not callable(getattr(model, "forward_graph", None)):
            raise TypeError(f"export_with_past: {type(model).__name__} is not a decoder-only model with a "
                            "forward_graph (GPT-2 or the Llama family)")
        self.decoder = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *past: Tensor):
        cache = PastKeyValues(list(past[0::2]), list(past[1::2]))
        logits = graph_logits(self.decoder, input_ids, attention_mask, cache, self.logits_to_keep)
        return (logits, *(t for kv in zip(cache.keys, cache.values) for t in kv))


def graph_logits(model, input_ids: Tensor, attention_mask: Tensor, cache: PastKeyValues, logits_to_keep: int = 0):
    """``model.forward_graph`` with the positions and attention biases computed from the mask as Tensor ops (what
    an exported graph computes from its inputs), extending ``cache``."""
    first_new = cache.length  # the new tokens' columns of the mask start here
    mask = attention_mask.float()  # (B, past + T), 1 for a token
    place = key_places(mask)  # each column's index 0 .. past + T - 1
    # transformers' position ids: the tokens before this one; padding at 1 (never read)
    positions = (mask.cumsum(-1) - 1) * mask + (1 - mask)
    # a new token (row) may look at the keys (columns) up to its own place that are not padding, and
    # in a layer with a sliding window only at the last ``window`` places (padding counted, as transformers)
    keys, queries = place.unsqueeze(1), place[:, first_new:].unsqueeze(2)
    allowed = (keys <= queries).float() * mask.unsqueeze(1)
    biases = {}
    for window in set(model.sliding_windows) | {None}:
        near = allowed if window is None else allowed * ((queries - keys) < window).float()
        biases[window] = ((near - 1) * FLOAT32_MAX).unsqueeze(1)  # (B, 1, T, past + T): 0 or float32's min
    return model.forward_graph(input_ids, positions[:, first_new:].long(), biases, cache, logits_to_keep)


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
    ``forgegrad.onnx.export``; raises as it does (an unsupported layer: UnsupportedOpError, naming it).
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
    example = tuple(Tensor(a) for a in _example(model, 2, 3, 4, seed))
    was_training = model.training
    try:
        return export(DecoderWithPast(model.eval(), logits_to_keep), example, path, opset=opset, dynamic_axes=axes,
                      input_names=names, output_names=outs, verify=verify, rtol=rtol, atol=atol,
                      verify_sizes=list(verify_sizes), metadata=_metadata(model))
    finally:
        model.train(was_training)


RECOMPUTE_KEY = "forgegrad.recompute_cache_at"


def _metadata(model) -> dict:
    """What generate_onnx needs to know beyond the graph: the length past which a longrope model (Phi-3)
    recomputes its whole sequence (``recompute_cache_at``), as ``generate`` does."""
    switch = getattr(model, "recompute_cache_at", None)
    return {} if switch is None else {RECOMPUTE_KEY: str(int(switch))}


def _recompute_at(session):
    value = session.get_modelmeta().custom_metadata_map.get(RECOMPUTE_KEY)
    return None if value is None else int(value)


class TokenPicker:
    """The choices of a decoding loop on exported graphs (generate_onnx, generate_onnx_seq2seq), as transformers'
    generate makes them: ``select_next`` (greedy, or a draw after the warpers from forgegrad's generator), then
    rows that produced an end token continue with ``pad_token_id``. ``finished`` once every row has ended."""

    def __init__(self, batch: int, eos_token_id, pad_token_id: int, do_sample: bool, temperature: float, top_k,
                 top_p, min_p=None):
        from .sampling import Sampler
        self.sampler = Sampler(do_sample, temperature, top_k, top_p, min_p)
        self.eos = set(np.atleast_1d(eos_token_id).tolist()) if eos_token_id is not None else set()
        self.pad = np.int64(pad_token_id)
        self.done = np.zeros(batch, bool)

    def __call__(self, last_logits: np.ndarray, forced=None) -> np.ndarray:
        """The next token of each row from its last position's logits (B, V), or ``forced`` for every row."""
        nxt = self.sampler(last_logits) if forced is None else np.full(last_logits.shape[0], forced, np.int64)
        if self.eos:
            nxt = np.where(self.done, self.pad, nxt)
            self.done |= np.isin(nxt, list(self.eos))
        return nxt

    @property
    def finished(self) -> bool:
        return bool(self.eos) and bool(self.done.all())


def beam_sampler(do_sample: bool, temperature, top_k, top_p, min_p):
    """The Sampler of beam sampling on exported graphs, or None for beam search."""
    from .sampling import Sampler
    return Sampler(True, temperature, top_k, top_p, min_p) if do_sample else None


def session_of(s):
    """An onnxruntime CPU session for a path, or ``s`` itself (a session already)."""
    if isinstance(s, (str, bytes)) or hasattr(s, "__fspath__"):
        import onnxruntime as ort
        return ort.InferenceSession(str(s), providers=["CPUExecutionProvider"])
    return s


def check_prompt(who: str, input_ids, attention_mask, max_new_tokens):
    """(ids, mask) as int64 arrays of one (batch, tokens >= 1) shape, with max_new_tokens checked."""
    ids = np.asarray(input_ids, np.int64)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"{who}: input_ids must be (batch, tokens) with tokens >= 1, got shape {ids.shape}")
    mask = np.ones(ids.shape, np.int64) if attention_mask is None else np.asarray(attention_mask, np.int64)
    if mask.shape != ids.shape:
        raise ValueError(f"{who}: attention_mask must have input_ids' shape {ids.shape}, got {mask.shape}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"{who}: max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    return ids, mask


def generate_onnx(session, input_ids, attention_mask=None, max_new_tokens: int = 20, eos_token_id=None,
                  pad_token_id: int = 0, do_sample: bool = False, temperature: float = 1.0, top_k=None,
                  top_p=None, num_beams: int = 1, length_penalty: float = 1.0, early_stopping=False, min_p=None,
                  num_return_sequences: int = 1) -> np.ndarray:
    """Decoding in onnxruntime on a graph written by ``export_with_past``: ``session`` (an
    ``onnxruntime.InferenceSession`` or the .onnx path) runs once on the prompt (no past) and once per
    new token on the cache it returned. Like transformers' ``generate``: a row that produced
    ``eos_token_id`` (an int or a list) continues with ``pad_token_id`` until every row has, or until
    ``max_new_tokens``. Greedy, or with ``do_sample`` a draw after transformers' warpers (``temperature``,
    ``top_k``, ``top_p``: ``select_next``) from forgegrad's generator, so after ``forgegrad.manual_seed(s)``
    it draws as ``generate`` does after the same seed. ``num_beams`` > 1: beam search (``length_penalty``,
    ``early_stopping``), the search ``generate(model, ..., num_beams=K)`` runs (``onnx_beam``), each beam's
    cache gathered from its source beam's (not with ``do_sample``). ``num_return_sequences`` R: each prompt's
    R best hypotheses (R <= ``num_beams``), or R draws when sampling. Returns the prompt followed by the new
    tokens, (batch * R, prompt + new) int64, R rows per prompt.
    """
    session = session_of(session)
    ids, mask = check_prompt("generate_onnx", input_ids, attention_mask, max_new_tokens)
    inputs = session.get_inputs()
    past_names = [i.name for i in inputs if i.name.startswith("past_key_values.")]
    if [i.name for i in inputs[:2]] != ["input_ids", "attention_mask"] or not past_names:
        raise ValueError("generate_onnx: the graph's inputs are not export_with_past's (input_ids, attention_mask, "
                         f"past_key_values.<i>.key/value): {[i.name for i in inputs]}")
    from .onnx_beam import beam_onnx, beam_settings
    beams = beam_settings("generate_onnx", num_beams, length_penalty, early_stopping, num_return_sequences, do_sample)
    if beams[0] > 1:
        return beam_onnx(session, ids, mask, max_new_tokens, eos_token_id, pad_token_id, *beams,
                         sampler=beam_sampler(do_sample, temperature, top_k, top_p, min_p))
    ids, mask = np.repeat(ids, beams[3], axis=0), np.repeat(mask, beams[3], axis=0)  # sampling: R draws per prompt
    B = ids.shape[0]
    pick = TokenPicker(B, eos_token_id, pad_token_id, do_sample, temperature, top_k, top_p, min_p)
    empty = {i.name: np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32) for i in inputs[2:]}
    feed = {"input_ids": ids, "attention_mask": mask, **empty}
    switch = _recompute_at(session)
    out = [ids]
    for _ in range(int(max_new_tokens)):
        logits, *present = session.run(None, feed)
        nxt = pick(logits[:, -1])
        out.append(nxt[:, None])
        if pick.finished:
            break
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], axis=1)
        if switch is not None and mask.shape[1] - 1 == switch:
            # the sequence now reaches past a longrope model's original context, where its frequencies change:
            # every position is recomputed with the long ones (as generate and transformers' Phi-3 do)
            feed = {"input_ids": np.concatenate(out, axis=1), "attention_mask": mask, **empty}
            continue
        feed = {"input_ids": nxt[:, None], "attention_mask": mask, **dict(zip(past_names, present))}
    return np.concatenate(out, axis=1)
