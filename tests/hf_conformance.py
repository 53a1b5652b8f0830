"""Checks shared by the Hugging Face checkpoint tests (test_hf_checkpoints.py, test_hf_llama_variants.py,
test_hf_moe_gemma.py, test_hf_gpt_neox.py, test_hf_olmo2.py, test_hf_olmo3.py, ...): a forgegrad model loaded with
from_pretrained against the transformers model that wrote the checkpoint. Each test file keeps its own models,
inputs and tolerances and passes them in.

    check_logits                  the Tensor forward (and, graph_free, the no_grad forward) gives transformers' logits
    check_left_padded_logits      the same on a left-padded batch, at the real (unpadded) positions
                                  (mask_only: the mask alone, positions from the model's own rule, checked too)
    check_beam_search             generate's beam search on a left-padded batch equals transformers'
    check_greedy_generation       generate's greedy tokens equal transformers' (one prompt, a left-padded
                                  batch) and a frozen copy's
    check_save_pretrained_round_trip   save_pretrained writes what transformers loads, with the same logits
    check_lean_decode_step        the lean decode step of the last token equals the Tensor forward's last row
    check_greedy_by_hand          generate equals greedy decoding by hand with the model's own forward
    counting_lean_prefill         a context that records each LeanDecoder.prefill call
    check_lean_step_and_prefill   the lean path applies; its decode step and (no_grad) prefill equal the Tensor forward
    check_decoder_export_with_past   export_with_past's greedy tokens on a left-padded batch in onnxruntime equal
                                  transformers'
    engine_completions            greedy completions of token-id prompts through a batched engine
    check_batched_engines         the contiguous and paged engines (and the server) give generate's tokens
    left_padded_positions         transformers' positions for a left-padded mask
    check_decoder_gradients       training: every parameter's gradient equals transformers' (float64), under the
                                  checkpoint's names
    padded_batch                  random right-padded token rows and their attention mask (the encoder tests)
    check_encoder_export          an encoder's ONNX export gives transformers' hidden states in onnxruntime
    save_checkpoints              the body of a module's checkpoints fixture: transformers models saved by name
    seq2seq_logits                a transformers encoder-decoder's logits for (input, mask, decoder input) arrays
    seq2seq_gradients             both sides' parameter gradients of a weighted sum of the logits (transformers
                                  in float64)
    chat_tokenizer                a tiny byte-level BPE tokenizer (transformers' fast tokenizer) with ChatML's
                                  special tokens and a given chat template
    check_seq2seq_generation      an encoder-decoder's greedy, beam and top_k 1 sampled tokens equal transformers';
                                  seeded sampling repeats
    check_seq2seq_gradients       every parameter's gradient equals transformers' float64 copy's
    check_seq2seq_onnx_greedy     export_seq2seq's graphs give transformers' greedy tokens in onnxruntime
    check_seq2seq_paged_server    the completions server on a paged pool gives generate's tokens

torch is imported inside the functions: the test files skip themselves (pytest.importorskip) where it is
missing, after importing this module.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np

import forgegrad as fg
from forgegrad.models import generate, save_pretrained


def left_padded_positions(mask):
    """transformers' positions for a left-padded (B, T) mask: real tokens count from 0, padding gets 1."""
    return np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1)


def save_checkpoints(root, makers, *, seed=0):
    """With torch seeded, each makers[name]() in order, in eval mode, saved by its save_pretrained to
    root / name. Returns (root, {name: model})."""
    import torch
    torch.manual_seed(seed)
    models = {}
    for name, make in makers.items():
        models[name] = make().eval()
        models[name].save_pretrained(root / name)
    return root, models


def _hf_logits(hf_model, ids, **kw):
    import torch
    with torch.no_grad():
        return hf_model(torch.tensor(ids), **{k: torch.tensor(v) for k, v in kw.items()}).logits.numpy()


def _hf_greedy(hf_model, ids, max_new_tokens, attention_mask=None):
    import torch
    kw = {} if attention_mask is None else {"attention_mask": torch.tensor(attention_mask)}
    with torch.no_grad():
        return hf_model.generate(torch.tensor(ids), **kw, max_new_tokens=max_new_tokens,
                                 min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0).numpy()


def check_logits(model, hf_model, ids, *, rtol=1e-4, atol=1e-4, graph_free=True):
    """model(ids) (the Tensor forward) gives hf_model's logits; with graph_free, under fg.no_grad too (the
    graph-free forward: the lean prefill where no window is reached)."""
    ref = _hf_logits(hf_model, ids)
    np.testing.assert_allclose(model(ids).numpy(), ref, rtol=rtol, atol=atol)
    if graph_free:
        with fg.no_grad():
            np.testing.assert_allclose(model(ids).numpy(), ref, rtol=rtol, atol=atol)


def check_left_padded_logits(model, hf_model, left_padded, left_mask, *, rtol=1e-4, atol=1e-4, mask_only=False):
    """A left-padded batch with its attention mask and position ids counted from each row's first real
    token: the logits at the real positions equal hf_model's. mask_only: also with the mask alone (each side
    counts the positions by its own rule)."""
    positions = np.where(left_mask, np.cumsum(left_mask, 1) - 1, 1)
    ref = _hf_logits(hf_model, left_padded, attention_mask=left_mask, position_ids=positions)
    got = model(left_padded, attention_mask=left_mask, position_ids=positions).numpy()
    real = left_mask.astype(bool)
    np.testing.assert_allclose(got[real], ref[real], rtol=rtol, atol=atol)
    if mask_only:
        ref = _hf_logits(hf_model, left_padded, attention_mask=left_mask)
        got = model(left_padded, attention_mask=left_mask).numpy()
        np.testing.assert_allclose(got[real], ref[real], rtol=rtol, atol=atol)


def check_beam_search(model, hf_model, left_padded, left_mask, *, new_tokens=10, num_beams=3):
    """generate(num_beams=...) on a left-padded batch gives transformers' beam search sequences."""
    import torch
    with torch.no_grad():
        ref = hf_model.generate(torch.tensor(left_padded), attention_mask=torch.tensor(left_mask),
                                max_new_tokens=new_tokens, num_beams=num_beams, do_sample=False,
                                pad_token_id=0).numpy()
    got = generate(model, left_padded, attention_mask=left_mask, max_new_tokens=new_tokens, num_beams=num_beams)
    np.testing.assert_array_equal(got, ref)


def check_greedy_generation(model, hf_model, prompt, left_padded, left_mask, *, new_tokens=50,
                            padded_new_tokens=20, frozen_new_tokens=30, hf_fresh=None):
    """Greedy generate gives hf_model's new_tokens tokens after prompt (exactly that many) and its
    padded_new_tokens after the left-padded batch; unless frozen_new_tokens is None, the model frozen by
    nn.utils.freeze generates the same frozen_new_tokens tokens as the model itself. hf_fresh: a function
    giving a new transformers model for each comparison instead of hf_model (a model whose state carries
    from call to call: transformers' dynamic rope keeps the longest length it has seen). Both sides run to
    the end: transformers' min_new_tokens is forgegrad's min_length of the prompt and the new tokens (the
    checkpoint's end tokens banned until then)."""
    if hf_fresh is not None:
        hf_model = hf_fresh()
    ref = _hf_greedy(hf_model, prompt, new_tokens)
    got = generate(model, prompt, max_new_tokens=new_tokens, min_length=prompt.shape[1] + new_tokens)
    assert got.shape == (prompt.shape[0], prompt.shape[1] + new_tokens)
    np.testing.assert_array_equal(got, ref)
    if hf_fresh is not None:
        hf_model = hf_fresh()
    ref = _hf_greedy(hf_model, left_padded, padded_new_tokens, attention_mask=left_mask)
    np.testing.assert_array_equal(generate(model, left_padded, attention_mask=left_mask,
                                           max_new_tokens=padded_new_tokens,
                                           min_length=left_padded.shape[1] + padded_new_tokens), ref)
    if frozen_new_tokens is not None:
        frozen = fg.nn.utils.freeze(model)
        np.testing.assert_array_equal(generate(frozen, prompt, max_new_tokens=frozen_new_tokens, eos_token_id=[]),
                                      generate(model, prompt, max_new_tokens=frozen_new_tokens, eos_token_id=[]))


def check_save_pretrained_round_trip(model, hf_model, hf_class, path, ids, *, architecture=None, model_type=None,
                                     rtol=1e-6, atol=1e-6):
    """save_pretrained(model, path); where architecture is given, config.json names it (and model_type);
    hf_class.from_pretrained(path) gives hf_model's logits on ids."""
    save_pretrained(model, path)
    if architecture is not None:
        cfg = json.loads((path / "config.json").read_text())
        assert cfg["architectures"] == [architecture] and cfg["model_type"] == model_type
    back = hf_class.from_pretrained(path).eval()
    want = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    for k, v in back.state_dict().items():  # the weights themselves come back bit for bit
        if k in want:
            np.testing.assert_array_equal(v.detach().numpy(), want[k], err_msg=k)
    # (the logits of two torch models with the same weights: torch's MoE layers sum the experts' outputs in an order
    # that can vary between calls, ~2e-6 apart, so not to 1e-6)
    np.testing.assert_allclose(_hf_logits(back, ids), _hf_logits(hf_model, ids), rtol=max(rtol, 1e-5),
                               atol=max(atol, 1e-5))


def check_lean_decode_step(model, ids, *, rtol=1e-5, atol=1e-5, cache_len=None):
    """The Tensor forward of all of ids (grad enabled) against a no_grad forward of all but the last token
    into a cache of cache_len (default: ids' length) and the lean decode step of the last token. Returns
    the Tensor forward's last row."""
    from forgegrad.models.hf._decode import LeanDecoder
    batch, n = ids.shape
    full = model(ids).numpy()[:, -1]
    cache = model.new_cache(batch, n if cache_len is None else cache_len)
    with fg.no_grad():
        model(ids[:, :-1], cache=cache)
    lean = LeanDecoder(model).step(ids[:, -1], np.full(batch, n - 1), None, cache)
    np.testing.assert_allclose(lean, full, rtol=rtol, atol=atol)
    return full


def check_greedy_by_hand(model, prompt, new_tokens):
    """generate's greedy tokens (no end token: eos_token_id=[]) equal argmax decoding by hand with model's
    Tensor forward (grad enabled: no lean prefill), one full forward a token."""
    want = prompt.copy()
    for _ in range(new_tokens):
        want = np.concatenate([want, model(want).numpy()[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(generate(model, prompt, max_new_tokens=new_tokens, eos_token_id=[]), want)


@contextlib.contextmanager
def counting_lean_prefill():
    """Within the context, each LeanDecoder.prefill call appends 1 to the yielded list."""
    import forgegrad.models.hf._decode as D
    calls, prefill = [], D.LeanDecoder.prefill
    D.LeanDecoder.prefill = lambda self, *a: calls.append(1) or prefill(self, *a)
    try:
        yield calls
    finally:
        D.LeanDecoder.prefill = prefill


def chat_tokenizer(template, corpus: str = "hello world, a tiny corpus for a tiny tokenizer", every_byte=True):
    """A PreTrainedTokenizerFast over a byte-level BPE trained on a tiny corpus (280 tokens, ids 0 and 1 the
    special tokens <|im_start|> and <|im_end|>, also bos and eos) with ``template`` as its chat template.
    ``every_byte`` False: its alphabet is only the corpus's characters (it cannot spell any other)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(), decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet() if every_byte else []
    tok.train_from_iterator([corpus] * 10, trainers.BpeTrainer(vocab_size=280, initial_alphabet=alphabet,
                                                               special_tokens=["<|im_start|>", "<|im_end|>"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                                eos_token="<|im_end|>")
    fast.chat_template = template
    return fast


def seq2seq_logits(hf, ids, mask, dec):
    """The logits of a transformers encoder-decoder (T5, BART, Marian) as a numpy array."""
    import torch
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  decoder_input_ids=torch.tensor(dec)).logits.numpy()


def tiny_byte_gpt2(path, n_positions: int = 512):
    """A 2-layer GPT-2 of 300 tokens written by transformers (torch seeded 0) whose end token, 299, is past the
    byte tokens: the checkpoint the CLI and server tests decode byte text with."""
    import torch
    import transformers
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=n_positions,
                                  initializer_range=0.3, eos_token_id=299, bos_token_id=299)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def tiny_chat_gpt2(path, template: str):
    """tiny_byte_gpt2's model with a chat tokenizer (``chat_tokenizer(template)``), its end token the end of a
    turn (<|im_end|>)."""
    import torch
    import transformers
    torch.manual_seed(0)
    tok = chat_tokenizer(template)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=512,
                                  initializer_range=0.3, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def weight_variant(hf, path, weights: str, tmp_path):
    """forgegrad's model of ``hf``'s checkpoint at ``path`` with ``weights``: "bfloat16" (a copy of ``hf`` saved in
    bfloat16, loaded as stored; ``hf`` itself stays float32) or "int8" (quantize_weight_only)."""
    import copy

    import torch

    from forgegrad.models import from_pretrained
    from forgegrad.quantization import quantize_weight_only
    if weights == "bfloat16":
        copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
        return from_pretrained(tmp_path / "bf16", dtype="bfloat16")
    return quantize_weight_only(from_pretrained(path))


def seq2seq_gradients(hf, model, ids, mask, dec, seed=1):
    """(forgegrad's parameters, transformers' float64 copy's parameters), each with the gradient of the same
    random weighted sum of its logits, both in training mode."""
    import copy

    import torch
    ref = copy.deepcopy(hf).double().train()
    model.train()
    w = np.random.RandomState(seed).standard_normal(tuple(dec.shape) + (model.decoder_vocab_size,))
    out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
              decoder_input_ids=torch.tensor(dec)).logits
    (out * torch.tensor(w)).sum().backward()
    (model(ids, mask, dec) * fg.tensor(w.astype(np.float32))).sum().backward()
    return dict(model.named_parameters()), dict(ref.named_parameters())


def check_decoder_gradients(model, hf_model, ids, *, seed=1, rtol=1e-4, atol_of_largest=1e-5):
    """Both in training mode (the configs' dropout 0): the gradient of the same random weighted sum of the logits of
    ids, for every parameter, equals transformers' float64 copy's, each matched by its checkpoint name (the model's
    ``to_hf`` of its gradients: renames, stacked or fused tensors as the checkpoint holds them); within atol_of_largest
    times the largest gradient."""
    import copy

    import torch
    ref = copy.deepcopy(hf_model).double().train()
    w = np.random.RandomState(seed).standard_normal(tuple(ids.shape) + (model.vocab_size,))
    (ref(torch.tensor(ids)).logits * torch.tensor(w)).sum().backward()
    want = {k: p.grad.numpy() for k, p in ref.named_parameters()}
    model.train()
    (model(ids) * fg.tensor(w.astype(np.float32))).sum().backward()
    model.load_state_dict({k: p.grad for k, p in model.named_parameters()})  # the gradients, named as saved
    got = model.to_hf()
    assert set(got) == set(want)
    scale = max(float(np.abs(g).max()) for g in want.values())
    for key, g in want.items():
        np.testing.assert_allclose(got[key], g, rtol=rtol, atol=atol_of_largest * scale, err_msg=key)


def tiny_generator(name, vocab):
    """A transformers model with random weights (torch seeded 0) for the generation tests: "gpt2", "llama"
    (grouped-query attention), "t5" or "bart", each 2 layers, of ``vocab`` tokens."""
    import torch
    import transformers
    torch.manual_seed(0)
    if name == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=vocab,
                                                                    n_positions=64, initializer_range=0.3))
    if name == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(
            num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, intermediate_size=40,
            vocab_size=vocab, max_position_embeddings=64, initializer_range=0.3))
    if name == "t5":
        return transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, initializer_factor=3.0,
            dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    if name == "bart":
        return transformers.BartForConditionalGeneration(transformers.BartConfig(
            vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64, dropout=0.0,
            init_std=0.3))
    raise ValueError(f"tiny_generator: no model named {name!r}")


def check_lean_seq2seq_step(model, step_class, ids, mask, hook_module, *, steps=20, new_tokens=12):
    """An encoder-decoder's lean step (``step_class``, models/hf/_decode_seq2seq.py) gives the Tensor decode's
    logits at ``steps`` steps; generate takes it only where it applies (a forward pre-hook on ``hook_module``
    keeps the Tensor path), with the same tokens either way."""
    import forgegrad as fg
    from forgegrad.models.hf import generate
    from forgegrad.models.hf._decode_seq2seq import lean_applies
    B = ids.shape[0]
    with fg.no_grad():
        states = model.encode(ids, mask)
        cross = model.cross_kv(states)
        lean_cache, tensor_cache = model.new_cache(B, steps + 1), model.new_cache(B, steps + 1)
        lean = step_class(model, cross, mask.astype(bool), lean_cache)
        tokens = np.full(B, model.decoder_start_token_id)
        for _ in range(steps):
            got = lean(tokens)
            want = model.decode(tokens[:, None], states, mask, cross=cross, cache=tensor_cache).numpy()[:, -1]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
            tokens = want.argmax(-1)
        assert lean_applies(model)
    assert not lean_applies(model)  # a graph would be recorded
    fast = generate(model, ids, max_new_tokens=new_tokens, attention_mask=mask)
    handle = hook_module.register_forward_pre_hook(lambda m, args: None)
    try:
        with fg.no_grad():
            assert not lean_applies(model)
        np.testing.assert_array_equal(generate(model, ids, max_new_tokens=new_tokens, attention_mask=mask), fast)
    finally:
        handle.remove()


def tiny_bert_cross_encoder(path, corpus, max_len=None):
    """A one-label BertForSequenceClassification (2 layers, 32 wide; torch seeded 0, initializer_range 0.5) with a
    WordPiece tokenizer trained on ``corpus`` saved as BertTokenizerFast (pairs get [CLS] / [SEP] and token types),
    written by transformers at ``path``: the cross-encoder of the rerank and classify tests."""
    import torch
    import transformers
    from tokenizers import BertWordPieceTokenizer
    path.mkdir()
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(corpus, vocab_size=120)
    tok.save(str(path / "tokenizer.json"))
    transformers.BertTokenizerFast(  # as cross-encoders ship theirs: pairs get [CLS] / [SEP] and token types
        tokenizer_file=str(path / "tokenizer.json"), model_max_length=max_len or 64).save_pretrained(path)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, num_labels=1, initializer_range=0.5)).save_pretrained(path)
    return path


def tiny_roberta_tokenizer(path, corpus):
    """A byte-level BPE tokenizer (300 tokens, RoBERTa's <s> <pad> </s> <unk> <mask> at 0-4 and its pair template)
    trained on ``corpus`` and saved as tokenizer.json in the new directory ``path``; returns that file's path."""
    from tokenizers import ByteLevelBPETokenizer, processors
    path.mkdir()
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(str(path / "tokenizer.json"))
    return path / "tokenizer.json"


def padded_batch(lengths, vocab: int, pad: int = 0, low: int = 3, seed: int = 3):
    """(ids, attention_mask) of random token rows of ``lengths`` (ids in [low, vocab)), right-padded with ``pad``."""
    rng = np.random.RandomState(seed)
    ids = np.full((len(lengths), max(lengths)), pad, np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.randint(low, vocab, n)
        mask[i, :n] = 1
    return ids, mask


def check_encoder_export(model, hf, path, batches):
    """Export ``model`` (an encoder of input_ids, dynamic batch and length) to ``path`` and check that onnxruntime
    gives transformers' (``hf``'s) last hidden states on each of ``batches``."""
    import onnxruntime as ort
    import torch

    from forgegrad.onnx import export
    report = export(model, np.arange(3, 10, dtype=np.int64)[None], str(path),
                    dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}},
                    rtol=1e-4, atol=1e-5)  # hidden states of size ~3 (initializer_range 0.3)
    assert report.ok, report
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for ids in batches:
        got = sess.run(None, {sess.get_inputs()[0].name: ids})[0]
        with torch.no_grad():
            ref = hf(torch.tensor(ids)).last_hidden_state.numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def check_decoder_export_with_past(model, hf_model, path, left_padded, left_mask, *, new_tokens=12):
    """export_with_past writes ``model`` to ``path``, and generate_onnx's greedy tokens for the left-padded batch in
    onnxruntime equal transformers' (``hf_model``'s)."""
    import onnxruntime as ort

    from forgegrad.models.hf import export_with_past, generate_onnx
    assert export_with_past(model, path).ok
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = generate_onnx(sess, left_padded, left_mask, max_new_tokens=new_tokens)
    np.testing.assert_array_equal(got, _hf_greedy(hf_model, left_padded, new_tokens, attention_mask=left_mask))


def check_lean_step_and_prefill(model, ids, *, prefill_ids=None):
    """The lean path applies to ``model``; its decode step of ids' last token equals the Tensor forward
    (check_lean_decode_step); and a no_grad forward of prefill_ids (default: ids) takes the lean prefill, once, with
    the Tensor forward's logits."""
    from forgegrad.models.hf._decode import lean_path_applies
    assert lean_path_applies(model)
    check_lean_decode_step(model, ids)
    prefill_ids = ids if prefill_ids is None else prefill_ids
    with counting_lean_prefill() as calls, fg.no_grad():
        got = model(prefill_ids).numpy()
    assert calls == [1]
    np.testing.assert_allclose(got, model(prefill_ids).numpy(), rtol=1e-5, atol=1e-5)


# prompts of different lengths for the engines: 3, 12 and 20 tokens
ENGINE_PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [40] * 20]


def engine_completions(engine_cls, path, prompts, max_tokens, kw):
    """Greedy completions of token-id prompts, all submitted at once to an engine over ``path`` (its settings:
    kw(generator)): each one's ids."""
    import threading

    from forgegrad.serve.completion_request import parse
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.generation_batch import Job
    gen = TextGenerator(path)
    engine = engine_cls(gen, 4, **kw(gen))
    try:
        req = parse(json.dumps({"prompt": "x", "model": "m", "max_tokens": max_tokens, "temperature": 0,
                                "stream": True}).encode(), "m")
        jobs = [engine.submit(Job(req, [list(p)], lambda *a: None, threading.Event())) for p in prompts]
        return [j.result(timeout=120)[0].token_ids for j in jobs]
    finally:
        engine.close()


def check_batched_engines(path, *, prompts=ENGINE_PROMPTS, new_tokens=12, server=False):
    """The checkpoint at ``path`` batches; prompts decoded together by the contiguous engine (padding masked in the
    lean step) and by the paged engine (block tables) give generate's tokens, one prompt at a time; with ``server``,
    so do concurrent requests to the completions server (the paged engine: its kv_cache_peak metric moves)."""
    from forgegrad.models import from_pretrained
    from forgegrad.serve.generation_batch import BatchEngine, batching_applies
    from forgegrad.serve.kv_pool import KVPool
    from forgegrad.serve.paged_batch import PagedBatchEngine
    model = from_pretrained(path)
    assert batching_applies(model)
    want = [[int(t) for t in generate(model, [p], max_new_tokens=new_tokens)[0, len(p):]] for p in prompts]
    assert engine_completions(BatchEngine, path, prompts, new_tokens, kw=lambda gen: dict(prefill_chunk=8)) == want
    paged = engine_completions(PagedBatchEngine, path, prompts, new_tokens, kw=lambda gen: dict(
        pool=KVPool.for_model(gen.model, blocks=64, block_tokens=16), prefill_chunk=8))
    assert paged == want
    if server:
        _check_server_tokens(path, prompts, new_tokens, want)


def _check_server_tokens(path, prompts, new_tokens, want):
    import pytest
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serve_helpers import metric, post_all, running_app

    from forgegrad.serve.completions import GenerationServeConfig, TextGenerator, create_completions_app
    tokenizer = TextGenerator(path).tokenizer
    app = create_completions_app(GenerationServeConfig(path, model_name="m"))
    with running_app(app) as url:
        answers = post_all(url, [{"prompt": p, "max_tokens": new_tokens, "temperature": 0} for p in prompts])
        with httpx.Client(base_url=url, timeout=60) as c:
            assert metric(c.get("/metrics").text, "forgegrad_kv_cache_peak", model="m") > 0  # the paged engine
    for ids, r in zip(want, answers):
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == tokenizer.decode(ids)


# --- an encoder-decoder family's generic checks (test_hf_pegasus_blenderbot.py, test_hf_mt5_umt5.py) ---
def _seq2seq_hf_generate(hf, ids, mask, **kw):
    import torch
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()


def check_seq2seq_generation(hf, model, ids, mask, *, new_tokens=12):
    """Greedy and 3-beam tokens (the checkpoint's own generation settings on both sides) equal transformers';
    sampling with a seed repeats its draw; sampling with top_k 1 gives transformers' sampled tokens (forgegrad draws
    from its own generator, not torch's: only with no randomness left can the two sample the same tokens)."""
    import torch
    for beams in (1, 3):
        want = _seq2seq_hf_generate(hf, ids, mask, max_new_tokens=new_tokens, do_sample=False, num_beams=beams)
        got = generate(model, ids, max_new_tokens=new_tokens, attention_mask=mask, num_beams=beams)
        np.testing.assert_array_equal(got, want, err_msg=f"{beams} beams")
    assert (got[:, 0] == model.decoder_start_token_id).all()
    kw = dict(max_new_tokens=new_tokens, attention_mask=mask, do_sample=True, top_k=20, temperature=1.5)
    fg.manual_seed(5)
    first = generate(model, ids, **kw)
    fg.manual_seed(5)
    np.testing.assert_array_equal(generate(model, ids, **kw), first)
    torch.manual_seed(5)
    want = _seq2seq_hf_generate(hf, ids, mask, max_new_tokens=new_tokens, do_sample=True, top_k=1)
    got = generate(model, ids, max_new_tokens=new_tokens, attention_mask=mask, do_sample=True, top_k=1)
    np.testing.assert_array_equal(got, want)


def check_seq2seq_gradients(hf, model, ids, mask, dec, *, prefix="", atol_of_largest=1e-5):
    """Training: every parameter's gradient of the same random weighted sum of the logits equals transformers' float64
    copy's (``prefix`` + our name: BART's family's "model."), within atol_of_largest times the largest gradient (the
    key projections' biases get gradients of 0 up to rounding: softmax ignores them; an untied ``lm_head`` is named
    without the prefix on both sides)."""
    ours, theirs = seq2seq_gradients(hf, model, ids, mask, dec)
    want = {name: theirs[prefix + name if prefix + name in theirs else name].grad.numpy() for name in ours}
    scale = max(float(np.abs(g).max()) for g in want.values())
    for name, p in ours.items():
        np.testing.assert_allclose(p.grad.numpy(), want[name], rtol=1e-3, atol=atol_of_largest * scale, err_msg=name)


def check_seq2seq_onnx_greedy(hf, model, ids, mask, path, *, new_tokens=12):
    """export_seq2seq writes ``model``'s encoder and decoder-with-past graphs to ``path`` (each verified in
    onnxruntime), and generate_onnx_seq2seq's greedy tokens there (the config's end, pad, forced end tokens and
    encoder_no_repeat_ngram_size) equal transformers' generate on the padded batch."""
    import onnxruntime as ort

    from forgegrad.models.hf import export_seq2seq, generate_onnx_seq2seq
    enc, dec = export_seq2seq(model, path, atol=1e-3)
    assert enc.ok and dec.ok
    enc, dec = (ort.InferenceSession(str(path / f), providers=["CPUExecutionProvider"])
                for f in ("encoder.onnx", "decoder.onnx"))
    cfg = model.config
    got = generate_onnx_seq2seq(enc, dec, ids, mask, decoder_start_token_id=model.decoder_start_token_id,
                                max_new_tokens=new_tokens, eos_token_id=cfg["eos_token_id"],
                                pad_token_id=cfg["pad_token_id"], forced_eos_token_id=cfg.get("forced_eos_token_id"),
                                encoder_no_repeat_ngram_size=cfg.get("encoder_no_repeat_ngram_size", 0))
    want = _seq2seq_hf_generate(hf, ids, mask, max_new_tokens=new_tokens, do_sample=False, num_beams=1)
    np.testing.assert_array_equal(got, want)


def check_seq2seq_paged_server(model, path, tmp_path, vocab, *, new_tokens=12, blocks=12):
    """Concurrent greedy token-id requests to the completions server over a copy of the checkpoint at ``path`` (with a
    word-level tokenizer: token i is "w{i}") on a paged pool of ``blocks`` blocks each get the tokens generate gives
    the prompt alone; the pool's peak moves (the paged engine ran them)."""
    import shutil

    import httpx
    from serve_helpers import metric, post_all, running_app
    from tokenizers import Tokenizer, models, pre_tokenizers

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    from forgegrad.serve.kv_pool import KVPool
    shutil.copytree(path, tmp_path / "m")
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token=f"w{vocab - 1}"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    prompts = [[5, 6, 7], list(range(10, 40)), list(range(40, 48)), list(range(99, 105))]
    eos = model.config["eos_token_id"]
    want = []
    for p in prompts:
        out = [int(t) for t in generate(model, [p], max_new_tokens=new_tokens)[0, 1:]]
        want.append(" ".join(f"w{t}" for t in (out[:out.index(eos)] if eos in out else out)))
    block = KVPool.for_model(model, blocks=1).block_bytes
    app = create_completions_app(GenerationServeConfig(str(tmp_path / "m"), model_name="m",
                                                       kv_cache_mb=blocks * block / 2 ** 20))
    with running_app(app) as url:
        answers = post_all(url, [{"prompt": p, "max_tokens": new_tokens, "temperature": 0} for p in prompts])
        peak = metric(httpx.get(url + "/metrics").text, "forgegrad_kv_cache_peak", model="m")
    for r, w in zip(answers, want):
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"].strip() == w
    assert peak > 0


BYTE_IMAGE_TOKENS = (290, 291, 292, 299)  # a byte-token Gemma 3's image, start-of-image, end-of-image, end ids


def tiny_byte_gemma3_vlm(path, max_positions: int = 512, window: int = 16):
    """A 2-layer Gemma 3 with images of 300 tokens (byte tokens below 256; BYTE_IMAGE_TOKENS), its projector weight
    large enough that images change the text, written by transformers (torch seeded 0) with a Gemma3ImageProcessor
    config of 28 px. Returns (transformers' model, its image processor)."""
    import torch
    import transformers
    img, boi, eoi, eos = BYTE_IMAGE_TOKENS
    torch.manual_seed(0)
    text = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                intermediate_size=40, vocab_size=300, max_position_embeddings=max_positions, sliding_window=window,
                layer_types=["sliding_attention", "full_attention"], initializer_range=0.3, eos_token_id=eos)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=28,
                  patch_size=7, vision_use_head=False)
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                    image_token_id=img, boi_token_id=boi, eoi_token_id=eoi, eos_token_id=eos)
    hf = transformers.Gemma3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        hf.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.3)
    hf.save_pretrained(path)
    processor = transformers.Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
    processor.save_pretrained(path)
    return hf, processor


# pan-and-scan settings small enough for the 28 px tiny Gemma 3's pictures to be cropped
PAN_AND_SCAN = dict(pan_and_scan_min_crop_size=10, pan_and_scan_max_num_crops=4, pan_and_scan_min_ratio_to_activate=1.2)


def with_pan_and_scan(path, dest):
    """A copy at ``dest`` of the checkpoint at ``path`` whose preprocessor_config.json turns pan-and-scan on with
    PAN_AND_SCAN's settings; returns ``dest``."""
    import json
    import shutil
    shutil.copytree(path, dest)
    cfg = json.loads((path / "preprocessor_config.json").read_text())
    (dest / "preprocessor_config.json").write_text(json.dumps({**cfg, "do_pan_and_scan": True, **PAN_AND_SCAN}))
    return dest

