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
or sampled as ``generate`` samples, or by ``generate``'s beam search (``num_beams``: ``onnx_beam``), with
``generate``'s further settings (suppress_tokens ... max_time: generation_settings.py) through its own processor
list, Sampler and stopping criteria (``decoding_settings``, ``processors``, ``TokenPicker``).

Exports GPT-2 and the Llama family (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 1, 2 and 3), sliding
windows included (each window's bias computed once, from the same places), longrope and dynamic ropes
(frequencies chosen in the graph from the call's length; a longrope graph records in its metadata where
``generate_onnx`` recomputes the sequence) and the mixture-of-experts decoders (routing computed in the graph,
``SparseMoeBlock.dense_forward``).
"""
from __future__ import annotations

import os
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
    """The choices of a decoding loop on exported graphs (generate_onnx, generate_onnx_seq2seq), as generate makes
    them: the scores processed (``process``, the LogitsProcessors of ``generation._processors``), then the Sampler's
    choice (greedy, or a draw after the warpers from forgegrad's generator); rows that ended (an end token, or
    ``stopping``: stop strings, max_time) continue with ``pad_token_id`` where there are end tokens.
    ``sequences``: ``first`` (B, P), the prompt or the decoder start, and the tokens chosen so far; ``finished``
    once every row has ended."""

    def __init__(self, first: np.ndarray, max_new_tokens: int, eos: Sequence[int], pad_token_id: int, sampler,
                 process, stopping):
        B, P = first.shape
        self.tokens = np.empty((B, P + int(max_new_tokens)), np.int64)
        self.tokens[:, :P] = first
        self.length = P
        self.eos, self.pad = list(eos), np.int64(pad_token_id)
        self.sampler, self.process, self.stopping = sampler, process, stopping
        self.done = np.zeros(B, bool)

    @property
    def sequences(self) -> np.ndarray:
        return self.tokens[:, :self.length]

    def __call__(self, last_logits: np.ndarray) -> np.ndarray:
        """The next token of each row from its last position's logits (B, V), appended to ``sequences``."""
        if self.process.active:
            last_logits = self.process(self.sequences, last_logits)
        nxt = self.sampler(last_logits)
        if self.eos:
            nxt = np.where(self.done, self.pad, nxt)
            self.done |= np.isin(nxt, self.eos)
        self.tokens[:, self.length] = nxt
        self.length += 1
        if self.stopping.active:  # as generate: a row stopped so gets the pad token only where there are eos ids
            self.done |= self.stopping(self.sequences)
        return nxt

    @property
    def finished(self) -> bool:
        return bool(self.done.all())


def generation_config_of(who: str, value, graph) -> dict:
    """The generation config the ONNX paths read generate's further settings from: ``value`` a dict (a model's
    ``generation_config``), or the path of a generation_config.json or of the directory holding one (the
    checkpoint's); None: the generation_config.json next to ``graph`` (the .onnx file, when given as a path), as
    Hugging Face optimum saves it beside its exports, where there is one; else none ({})."""
    from ._files import read_json_object
    if isinstance(value, dict):
        return value
    if value is None:
        if not isinstance(graph, str) and not hasattr(graph, "__fspath__"):
            return {}  # a session: no file to look next to
        file = os.path.join(os.path.dirname(os.path.abspath(os.fspath(graph))), "generation_config.json")
        return read_json_object(file, who) if os.path.isfile(file) else {}
    if not isinstance(value, str) and not hasattr(value, "__fspath__"):
        raise TypeError(f"{who}: generation_config must be a dict, the path of a generation_config.json or of the "
                        f"directory holding one, or None, got {type(value).__name__}")
    file = os.fspath(value)
    if os.path.isdir(file):
        file = os.path.join(file, "generation_config.json")
    if not os.path.isfile(file):
        raise ValueError(f"{who}: generation_config: no such file {file!r}")
    return read_json_object(file, who)


def logits_vocab(session):
    """The vocabulary of a graph's ``logits`` (its last axis), or None where the graph leaves it open."""
    size = session.get_outputs()[0].shape[-1]
    return size if isinstance(size, int) else None


def decoding_settings(who: str, graph, generation_config, settings: dict, vocab, tokenizer, do_sample, temperature,
                      top_k, top_p, min_p):
    """(extra, sampler, stopping) of an ONNX decoding loop, as generate resolves them: each of generate's further
    settings (generation_settings.EXTRA_SETTINGS) from ``settings`` (the keyword arguments; None: off), else from
    the generation config (``generation_config_of``), checked as generate checks them (the errors name ``who``), and
    the config's settings that change the tokens but are not read named in one warning; the Sampler of the sampling
    arguments and the warpers; the Stopping (stop strings on ``tokenizer``, max_time counted from now)."""
    from types import SimpleNamespace

    from .generation import settings_sampler
    from .generation_settings import config_settings, given_settings, warn_unread_settings
    from .stopping import Stopping
    given = given_settings(who, settings)
    config = generation_config_of(who, generation_config, graph)
    warn_unread_settings(SimpleNamespace(generation_config=config))
    try:
        extra = config_settings(config, given, vocab)
        stopping = Stopping(extra["max_time"], extra["stop_strings"], tokenizer)
        return extra, settings_sampler(do_sample, temperature, top_k, top_p, min_p, extra), stopping
    except (ValueError, TypeError) as e:  # generate's checks, named after the function called
        text = str(e)
        if text.startswith("generate: "):
            raise type(e)(f"{who}: {text[len('generate: '):]}") from None
        raise


def processors(eos: Sequence[int], max_length: int, extra: dict, encoder_ids: np.ndarray, padding=None,
               prompt_length: int = 1, forced_bos=None, forced_eos=None):
    """generate's LogitsProcessors (``generation._processors``, the one list) of the settings the ONNX paths
    take: ``extra`` and the forced first / last tokens."""
    from .generation import _processors
    settings = (0, 0, 1.0, [], forced_bos, forced_eos)
    return _processors(None, settings, eos, max_length, padding=padding, extra=extra, prompt_length=prompt_length,
                       encoder_ids=encoder_ids)


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
                  num_return_sequences: int = 1, *, generation_config=None, tokenizer=None,
                  **settings) -> np.ndarray:
    """Decoding in onnxruntime on a graph written by ``export_with_past``: ``session`` (an
    ``onnxruntime.InferenceSession`` or the .onnx path) runs once on the prompt (no past) and once per
    new token on the cache it returned. Like transformers' ``generate``: a row that produced
    ``eos_token_id`` (an int or a list) continues with ``pad_token_id`` until every row has, or until
    ``max_new_tokens``. Greedy, or with ``do_sample`` a draw after transformers' warpers (``temperature``,
    ``top_k``, ``top_p``, ``min_p``) from forgegrad's generator, so after ``forgegrad.manual_seed(s)``
    it draws as ``generate`` does after the same seed. ``num_beams`` > 1: beam search (``length_penalty``,
    ``early_stopping``; with ``do_sample``, beam sampling), the search ``generate(model, ..., num_beams=K)`` runs
    (``onnx_beam``), each beam's cache gathered from its source beam's. ``num_return_sequences`` R: each prompt's
    R best hypotheses (R <= ``num_beams``), or R draws when sampling.

    generate's further settings, as keyword arguments with generate's meaning and checks: ``suppress_tokens``,
    ``begin_suppress_tokens``, ``bad_words_ids``, ``sequence_bias``, ``encoder_repetition_penalty``,
    ``encoder_no_repeat_ngram_size`` (the prompt's tokens and n-grams), ``min_new_tokens``,
    ``exponential_decay_length_penalty``, ``remove_invalid_values``, ``typical_p``, ``epsilon_cutoff``,
    ``eta_cutoff``, ``renormalize_logits``, ``stop_strings`` (with ``tokenizer``) and ``max_time``. Each left out
    comes from ``generation_config``: a dict (a model's ``generation_config``), a generation_config.json or the
    directory holding one; left at None, the generation_config.json next to the .onnx file (``session`` given as
    a path) where there is one. None given: the setting is off. The arguments above keep their defaults whatever
    the config says. Returns the prompt followed by the new tokens, (batch * R, prompt + new) int64, R rows per
    prompt.
    """
    graph = session
    session = session_of(session)
    ids, mask = check_prompt("generate_onnx", input_ids, attention_mask, max_new_tokens)
    inputs = session.get_inputs()
    past_names = [i.name for i in inputs if i.name.startswith("past_key_values.")]
    if [i.name for i in inputs[:2]] != ["input_ids", "attention_mask"] or not past_names:
        raise ValueError("generate_onnx: the graph's inputs are not export_with_past's (input_ids, attention_mask, "
                         f"past_key_values.<i>.key/value): {[i.name for i in inputs]}")
    from .beam_search import eos_list
    from .onnx_beam import beam_onnx, beam_settings
    beams = beam_settings("generate_onnx", num_beams, length_penalty, early_stopping, num_return_sequences, do_sample)
    extra, sampler, stopping = decoding_settings("generate_onnx", graph, generation_config, settings,
                                                 logits_vocab(session), tokenizer, do_sample, temperature, top_k,
                                                 top_p, min_p)
    eos, prompts, T = eos_list(eos_token_id), ids, ids.shape[1]
    if beams[0] == 1:  # sampling: R draws per prompt (beam search expands its own rows)
        ids, mask = np.repeat(ids, beams[3], axis=0), np.repeat(mask, beams[3], axis=0)
    process = processors(eos, T + int(max_new_tokens), extra, prompts, padding=mask.argmax(axis=1), prompt_length=T)
    if beams[0] > 1:
        return beam_onnx(session, ids, mask, max_new_tokens, eos, pad_token_id, *beams, sampler=sampler,
                         process=process, stopping=stopping)
    B = ids.shape[0]
    pick = TokenPicker(ids, max_new_tokens, eos, pad_token_id, sampler, process, stopping)
    empty = {i.name: np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32) for i in inputs[2:]}
    feed = {"input_ids": ids, "attention_mask": mask, **empty}
    switch = _recompute_at(session)
    for _ in range(int(max_new_tokens)):
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
