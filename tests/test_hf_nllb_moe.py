"""NLLB-MoE (models/hf/nllb_moe.py) from checkpoints transformers wrote: odd d_model and heads, a few experts, sparse
layers every other encoder layer and every decoder layer, padding masks; routing with no dropping (eval capacity the
whole batch), with capacity-dropped tokens (an eval fraction, batch-prioritized queues, normalising before dropping,
a router bias) and with a fixed expert_capacity (padding routed): encoder states and logits, the router logits and
auxiliary losses, greedy and beam generation, float64 gradients of every parameter, save_pretrained, the routing
against transformers' router itself, and the errors of bad configs and of a trace of the eager routing (the ONNX
export: test_hf_nllb_moe_onnx.py).

transformers 5's NllbMoeExperts.forward dispatches the tokens by the 0/1 value of the router's mask (expert_0 takes
every second choice, expert_1 every first one) instead of by the expert picked; the reference here is transformers
with the dispatch of transformers 4 (and fairseq) restored: each token through the experts its router weights."""
import contextlib
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained, generate, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from hf_conformance import seq2seq_gradients, seq2seq_logits  # noqa: E402

VOCAB = 90
_COMMON = dict(vocab_size=VOCAB, d_model=21, encoder_layers=3, decoder_layers=2, encoder_attention_heads=3,
               decoder_attention_heads=7, encoder_ffn_dim=19, decoder_ffn_dim=13, max_position_embeddings=64,
               num_experts=4, encoder_sparse_step=2, decoder_sparse_step=1, dropout=0.0, attention_dropout=0.0,
               activation_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0, init_std=0.3,
               decoder_start_token_id=2, pad_token_id=1, eos_token_id=2, bos_token_id=0)
CONFIGS = {
    # the checkpoints' routing: no dropping in eval (capacity: every token), outputs scaled by 1 - 0.2
    "no-drop": dict(),
    # capacity ceil(0.3 * tokens): late first and second choices dropped, queued by their top probability
    "eval-fraction": dict(num_experts=3, moe_eval_capacity_token_fraction=0.3, batch_prioritized_routing=True,
                          normalize_router_prob_before_dropping=True, router_bias=True, moe_token_dropout=0.0,
                          activation_function="gelu"),
    # the training capacity in eval too: expert_capacity 3, padding routed as any token
    "fixed-capacity": dict(moe_eval_capacity_token_fraction=-1.0, expert_capacity=3, router_ignore_padding_tokens=True,
                           num_experts=5, moe_token_dropout=0.1),
}


def _per_expert_dispatch(self, hidden_states, router_mask, router_probs):
    """transformers 4's NllbMoeSparseMLP dispatch: token n through expert e weighted by router_probs[n, e] where that
    is not 0 (the router's choices after the capacity), outputs of a token's experts summed."""
    out = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        tokens = router_probs[:, e] != 0
        if tokens.any():
            y = self[f"expert_{e}"](hidden_states[tokens])
            if self.moe_token_dropout > 0:
                y = self.token_dropout(y) if self.training else y * (1 - self.moe_token_dropout)
            out[tokens] += router_probs[tokens, e, None] * y
    return out


@pytest.fixture(scope="module", autouse=True)
def fixed_dispatch():
    from transformers.models.nllb_moe import modeling_nllb_moe
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(modeling_nllb_moe.NllbMoeExperts, "forward", _per_expert_dispatch)
        yield


def _hf(kind, **extra):
    torch.manual_seed(0)
    cfg = transformers.NllbMoeConfig(**{**_COMMON, **CONFIGS[kind], **extra})
    hf = transformers.NllbMoeForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-trivial final norms, so that a missing one is seen
        for norm in (hf.model.encoder.layer_norm, hf.model.decoder.layer_norm):
            norm.weight.normal_(1.0, 0.3)
            norm.bias.normal_(0.0, 0.3)
    return hf


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(kind, transformers model, forgegrad's from_pretrained of its checkpoint, the directory)."""
    hf = _hf(request.param)
    path = tmp_path_factory.mktemp("nllb_moe") / request.param
    hf.save_pretrained(path)
    return request.param, hf, from_pretrained(path), path


def _inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB, (4, 9))
    mask = np.ones((4, 9), np.int64)
    ids[1, 6:], mask[1, 6:] = 1, 0  # right padding
    ids[2, :3], mask[2, :3] = 1, 0  # left padding
    dec = rng.randint(3, VOCAB, (4, 5))
    dec[:, 0] = 2
    return ids, mask, dec


def _encoder_states(hf, ids, mask):
    with torch.no_grad():
        out = hf.model.encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    return out.last_hidden_state.numpy()


def _close(got, want, tol=1e-4):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_encoder_states_logits_and_save_pretrained_are_transformers(pair, tmp_path):
    kind, hf, model, path = pair
    assert type(model).__name__ == "NllbMoeForConditionalGeneration"
    ids, mask, dec = _inputs()
    _close(model.encode(ids, mask).numpy(), _encoder_states(hf, ids, mask))  # padding positions too
    want = seq2seq_logits(hf, ids, mask, dec)
    _close(model(ids, mask, dec).numpy(), want)
    _close(model(ids[:1], None, dec[:1]).numpy(), seq2seq_logits(hf, ids[:1], np.ones_like(ids[:1]), dec[:1]))
    save_pretrained(model, tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert cfg["architectures"] == ["NllbMoeForConditionalGeneration"] and cfg["model_type"] == "nllb-moe"
    back = transformers.NllbMoeForConditionalGeneration.from_pretrained(tmp_path / "saved").eval()
    _close(seq2seq_logits(back, ids, mask, dec), want, 1e-5)
    del cfg["architectures"]  # a config naming only its model_type
    (tmp_path / "saved" / "config.json").write_text(json.dumps(cfg))
    assert type(from_pretrained(tmp_path / "saved")).__name__ == "NllbMoeForConditionalGeneration"


def test_routing_is_transformers_router_and_drops_tokens(pair):
    """route_top2 on random router inputs (with padding) gives transformers' NllbMoeTop2Router's masks and weights;
    the dropping configs do drop choices."""
    from forgegrad.models.hf.nllb_moe import route_top2
    kind, hf, model, _ = pair
    router = hf.model.encoder.layers[1].ffn.router
    settings = model.router
    rng = np.random.RandomState(1)
    dropped = 0
    for N in (1, 7, 24):
        h = torch.tensor(rng.standard_normal((N, 21)).astype(np.float32))
        pad = rng.rand(N) < 0.2
        with torch.no_grad():
            top1_mask, gates, logits = router(h, torch.tensor(np.where(pad, -1e30, 0.0)[None, None, None]))
        probs = torch.softmax(logits, -1).numpy()
        first, second, keep1, keep2 = route_top2(probs, logits.numpy(), ~pad, settings, training=False)
        want1 = top1_mask.numpy().astype(bool)
        got1 = np.zeros_like(want1)
        got1[np.arange(N), first] = keep1
        np.testing.assert_array_equal(got1, want1)
        routed = gates.numpy() != 0
        got = got1.copy()
        got[np.arange(N), second] |= keep2
        np.testing.assert_array_equal(got, routed)
        dropped += int((~keep1).sum() + (~keep2).sum())
    if kind != "no-drop":
        assert dropped > 0


def test_router_logits_and_aux_losses_are_transformers(pair):
    kind, hf, model, _ = pair
    ids, mask, dec = _inputs()
    labels = np.roll(dec, -1, axis=1)
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(dec),
                 labels=torch.tensor(labels), output_router_logits=True)
    model.output_router_logits = True
    try:
        model(ids, mask, dec)
        encoder, decoder = model.router_logits()
        assert len(encoder) == 1 and len(decoder) == 2
        for got, want in zip(encoder + decoder, out.encoder_router_logits + out.decoder_router_logits):
            _close(got.numpy(), want.numpy())
        enc_aux, dec_aux = model.aux_losses(mask)
        np.testing.assert_allclose(enc_aux.item(), out.encoder_aux_loss.item(), rtol=1e-5)
        np.testing.assert_allclose(dec_aux.item(), out.decoder_aux_loss.item(), rtol=1e-5)
        assert model.router_aux_loss_coef == hf.config.router_aux_loss_coef
    finally:
        model.output_router_logits = False
    with pytest.raises(RuntimeError, match="output_router_logits"):
        model.router_logits()


def test_greedy_and_beam_generation_are_transformers(pair):
    kind, hf, model, _ = pair
    ids, mask, _ = _inputs()
    for beams in (1, 3):
        with torch.no_grad():
            want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=10,
                               do_sample=False, num_beams=beams).numpy()
        got = generate(model, ids, max_new_tokens=10, attention_mask=mask, num_beams=beams)
        np.testing.assert_array_equal(got, want, err_msg=f"{beams} beams")


def test_gradients_of_every_parameter_are_transformers_in_float64(pair, tmp_path):
    """Training routing (the training capacity: expert_capacity, or 2 * ceil(tokens / experts)); the token dropout
    off. A fresh transformers model: its router overwrites its expert_capacity in each eval forward and would train
    with the last one. The routers of transformers' float64 copy run in float32 (router_dtype), so the tolerance is
    float32's."""
    kind = pair[0]
    hf = _hf(kind, moe_token_dropout=0.0)
    hf.save_pretrained(tmp_path)
    ours, theirs = seq2seq_gradients(hf, from_pretrained(tmp_path), *_inputs())
    want = {name: theirs.get("model." + name, theirs.get(name)).grad for name in ours}
    # an expert no token reached has no gradient on either side (the capacity of 3 leaves some out)
    assert {n for n, g in want.items() if g is None} == {n for n, p in ours.items() if p.grad is None}
    want = {n: g.numpy() for n, g in want.items() if g is not None}
    scale = max(float(np.abs(g).max()) for g in want.values())
    for name, g in want.items():
        np.testing.assert_allclose(ours[name].grad.numpy(), g, rtol=1e-3, atol=1e-4 * scale, err_msg=name)


def test_bad_config_and_a_traced_eager_routing_raise_naming_the_problem(pair, tmp_path):
    from forgegrad.models.hf import NllbMoeForConditionalGeneration
    cfg = transformers.NllbMoeConfig(**_COMMON).to_dict()
    for key, value, error in [("num_experts", 1, ValueError), ("expert_capacity", 0, ValueError),
                              ("encoder_sparse_step", -1, ValueError), ("decoder_attention_heads", 4, ValueError),
                              ("second_expert_policy", "best", ValueError),
                              ("router_dtype", "int8", ValueError),
                              ("moe_token_dropout", 1.0, ValueError), ("batch_prioritized_routing", "yes", ValueError),
                              ("moe_eval_capacity_token_fraction", "all", ValueError)]:
        with pytest.raises(error, match=key):
            NllbMoeForConditionalGeneration({**cfg, key: value})
    _, _, model, path = pair
    saved = json.loads((path / "config.json").read_text())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({**saved, "num_experts": 0}))
    (tmp_path / "bad" / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="num_experts"):
        from_pretrained(tmp_path / "bad")
    from forgegrad.grad_mode import trace
    ids, mask, dec = _inputs()
    with pytest.raises(NotImplementedError, match="NllbMoeForConditionalGeneration: the routing of a traced call "
                                                  "must be dense_forward's"), trace():
        model(ids, mask, dec)  # a trace of the eager forward: refused, not the input's routing baked in (the ONNX
        # export traces encode_graph / decode_graph: test_hf_nllb_moe_onnx.py)


def test_a_dense_encoder_and_sparse_steps_of_two_are_transformers(tmp_path):
    """encoder_sparse_step 0: every encoder layer dense (no encoder router, no encoder aux loss); decoder_sparse_step 2:
    the second decoder layer sparse."""
    hf = _hf("no-drop", encoder_sparse_step=0, decoder_sparse_step=2)
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    assert [layer.sparse for layer in model.encoder.layers] == [False] * 3
    assert [layer.sparse for layer in model.decoder.layers] == [False, True]
    ids, mask, dec = _inputs()
    _close(model(ids, mask, dec).numpy(), seq2seq_logits(hf, ids, mask, dec))
    model.output_router_logits = True
    model(ids, mask, dec)
    encoder_aux, decoder_aux = model.aux_losses(mask)
    assert encoder_aux is None and decoder_aux is not None


@contextlib.contextmanager
def _noise_from_forgegrad():
    """transformers' router draws its Gumbel noise and uniforms from forgegrad's generator (as forgegrad's router
    does, draw for draw), so that the random second-expert policies can be compared."""
    from forgegrad.random import generator

    def gumbel(self, shape=()):
        return torch.from_numpy(generator().gumbel(size=tuple(shape)).astype(np.float32))

    def uniform(t, **kw):
        return torch.from_numpy(generator().random(t.shape[0], dtype=np.float32))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.distributions.gumbel.Gumbel, "rsample", gumbel)
        mp.setattr(torch, "rand_like", uniform)
        yield


@pytest.mark.parametrize("normalize_before", [False, True])
@pytest.mark.parametrize("policy", ["sampling", "random"])
def test_random_second_expert_policies_with_the_same_draws_are_transformers(policy, normalize_before, tmp_path):
    """second_expert_policy "sampling" (Gumbel noise on the logits that pick the second expert; the noisy logits are
    the router logits the aux loss reads) and "random" (the second kept with probability 2 p2; normalised before the
    dropping, its weight is its bare probability, as transformers' steps leave it), with capacity dropping: logits,
    router logits, aux losses and greedy tokens equal transformers' given the same draws."""
    import forgegrad as fg
    hf = _hf("eval-fraction", second_expert_policy=policy, normalize_router_prob_before_dropping=normalize_before)
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    ids, mask, dec = _inputs()
    labels = np.roll(dec, -1, axis=1)
    fg.manual_seed(3)
    with _noise_from_forgegrad(), torch.no_grad():
        out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(dec),
                 labels=torch.tensor(labels), output_router_logits=True)
    fg.manual_seed(3)
    model.output_router_logits = True
    _close(model(ids, mask, dec).numpy(), out.logits.numpy())
    encoder, decoder = model.router_logits()
    for got, want in zip(encoder + decoder, out.encoder_router_logits + out.decoder_router_logits):
        _close(got.numpy(), want.numpy())
    enc_aux, dec_aux = model.aux_losses(mask)
    np.testing.assert_allclose([enc_aux.item(), dec_aux.item()],
                               [out.encoder_aux_loss.item(), out.decoder_aux_loss.item()], rtol=1e-5)
    fg.manual_seed(5)  # other draws route otherwise
    assert np.abs(model(ids, mask, dec).numpy() - out.logits.numpy()).max() > 1e-3
    fg.manual_seed(4)
    with _noise_from_forgegrad(), torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=8,
                           do_sample=False).numpy()
    fg.manual_seed(4)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=8, attention_mask=mask), want)


@pytest.mark.parametrize("router_dtype", ["bfloat16", "float16"])
def test_half_precision_routers_are_transformers(router_dtype, tmp_path):
    """router_dtype bfloat16 / float16: transformers casts the router and its input to it; forgegrad rounds the
    input, weights, logits and probabilities as those casts do. Logits, router logits and greedy tokens equal
    transformers' (its aux losses are summed in the half type: within its precision)."""
    hf = _hf("eval-fraction", router_dtype=router_dtype)
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    ids, mask, dec = _inputs()
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(dec),
                 labels=torch.tensor(np.roll(dec, -1, axis=1)), output_router_logits=True)
    assert out.encoder_router_logits[0].dtype == getattr(torch, router_dtype)
    model.output_router_logits = True
    _close(model(ids, mask, dec).numpy(), out.logits.numpy())
    encoder, decoder = model.router_logits()
    for got, want in zip(encoder + decoder, out.encoder_router_logits + out.decoder_router_logits):
        np.testing.assert_array_equal(got.numpy(), want.float().numpy())
    enc_aux, dec_aux = model.aux_losses(mask)
    np.testing.assert_allclose([enc_aux.item(), dec_aux.item()],
                               [out.encoder_aux_loss.item(), out.decoder_aux_loss.item()], rtol=2e-2)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=10,
                           do_sample=False, num_beams=3).numpy()
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=10, attention_mask=mask, num_beams=3), want)


def test_training_drops_expert_outputs_with_forgegrads_generator(tmp_path):
    """moe_token_dropout in training: dropout on the expert outputs (not the eval scaling), drawn from forgegrad's
    generator: a seed repeats the logits, another seed changes them; eval mode gives transformers' scaled logits."""
    import forgegrad as fg
    hf = _hf("no-drop", moe_token_dropout=0.5)
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    ids, mask, dec = _inputs()
    model.train()
    fg.manual_seed(1)
    first = model(ids, mask, dec).numpy()
    fg.manual_seed(1)
    np.testing.assert_array_equal(model(ids, mask, dec).numpy(), first)
    fg.manual_seed(2)
    assert np.abs(model(ids, mask, dec).numpy() - first).max() > 1e-3
    model.eval()
    evaluated = model(ids, mask, dec).numpy()
    assert np.abs(evaluated - first).max() > 1e-3
    _close(evaluated, seq2seq_logits(hf, ids, mask, dec))
