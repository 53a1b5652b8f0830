"""FullyShardedDataParallel at one rank (a one-process MPI world): the units a model gets (fsdp_wrap.py) and what
reading a freed unit's parameter does. forgegrad's tied GPT-2 computes its logits as
``F.linear(x, transformer.wte.weight)`` in the root: with the embedding a unit of its own (the default before
models declared their blocks) the logits were all zeros, silently; now an op reading a freed parameter raises
an error naming it, and the default units (the blocks the model declares, ``_no_split_modules``) keep the
embeddings and the head in the root's unit. torch's auto_wrap_policy forms give the same units."""
import functools

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    small = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0, vocab_size=40)
    models = {"gpt2": transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2,
                                                                            n_positions=16, **small)),
              "bart": transformers.BartForConditionalGeneration(transformers.BartConfig(
                  encoder_layers=2, decoder_layers=2, d_model=16, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32,
                  decoder_start_token_id=0, **small)),
              "bert": transformers.BertModel(transformers.BertConfig(
                  num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=24, vocab_size=40,
                  max_position_embeddings=32))}
    path = tmp_path_factory.mktemp("hf")
    for name, model in models.items():
        model.save_pretrained(path / name)
    return {name: path / name for name in models}


IDS = np.array([[1, 5, 7, 3, 2], [4, 4, 9, 6, 8]])


def _logits(model, ids=IDS):
    ids = fg.tensor(ids)
    seq2seq = "decoder" in dict(getattr(model, "module", model).named_children())
    out = model(ids, decoder_input_ids=ids) if seq2seq else model(ids)
    for field in ("logits", "last_hidden_state"):
        if hasattr(out, field):
            return getattr(out, field)
    return out[0] if isinstance(out, tuple) else out


def _owning(net):
    return [m for m in net.modules() if any(p is not None for p in m._parameters.values())]


def test_an_op_reading_a_freed_units_parameter_raises_an_error_naming_it(hf_dirs):
    import forgegrad.distributed as dist
    from forgegrad import models
    comm.init()
    net = models.from_pretrained(hf_dirs["gpt2"])
    assert net.tied
    # GPT-2 reads wpe.weight by position (getitem) rather than calling wpe: the first read of a freed parameter
    with pytest.raises(RuntimeError, match=r"getitem: parameter transformer\.wpe\.weight is not gathered.*"
                                           r"\(Embedding, transformer\.wpe\)"):
        other = models.from_pretrained(hf_dirs["gpt2"])
        _logits(dist.FullyShardedDataParallel(other, units=_owning(other)))
    # wpe in the root: the tied head reads wte.weight in the root (F.linear), in eval as in training
    wrapped = dist.FullyShardedDataParallel(net, units=[m for m in _owning(net) if m is not net.transformer.wpe])
    for grad in (False, True):
        with fg.set_grad_enabled(grad), pytest.raises(RuntimeError, match=r"linear: parameter "
                                                      r"transformer\.wte\.weight is not gathered.*\(Embedding, "
                                                      r"transformer\.wte\)"):
            _logits(wrapped)
    # numpy itself reads NaN, and the unit gathers as usual
    assert np.isnan(wrapped.module.transformer.wte.weight.numpy()).all()
    with fg.no_grad():
        assert np.isfinite(wrapped.module.transformer.wte(fg.tensor(IDS)).numpy()).all()


def test_default_units_are_the_declared_blocks_and_compute_as_the_plain_model(hf_dirs):
    import forgegrad.distributed as dist
    from forgegrad import models
    comm.init()
    expected = {"gpt2": ["GPT2LMHeadModel"] + ["GPT2Block"] * 2, "bert": ["BertModel"] + ["BertLayer"] * 2,
                # BART: the decoder's cross-attention k_proj and v_proj run over the encoder's output outside
                # the layers (cross_kv): units of their own inside their layer's
                "bart": ["BartForConditionalGeneration"] + ["BartLayer"] * 2 + ["BartLayer", "Linear", "Linear"] * 2}
    for name, path in hf_dirs.items():
        plain, wrapped = models.from_pretrained(path), dist.FullyShardedDataParallel(models.from_pretrained(path))
        assert [type(u.module).__name__ for u in wrapped.units] == expected[name]
        with fg.no_grad():
            np.testing.assert_allclose(_logits(wrapped).numpy(), _logits(plain).numpy(), rtol=0, atol=1e-6,
                                       err_msg=name)


def test_torch_auto_wrap_policies_give_torchs_units(hf_dirs):
    import forgegrad.distributed as dist
    from forgegrad import models
    from forgegrad.distributed.fsdp_wrap import policy_units
    from forgegrad.models.hf.gpt2 import GPT2Block
    comm.init()
    net = models.from_pretrained(hf_dirs["gpt2"])
    blocks = list(net.transformer.h)
    for policy in (functools.partial(dist.transformer_auto_wrap_policy, transformer_layer_cls={GPT2Block}),
                   dist.ModuleWrapPolicy({GPT2Block}),
                   functools.partial(dist.lambda_auto_wrap_policy, lambda_fn=lambda m: isinstance(m, GPT2Block))):
        assert policy_units(net, policy) == blocks
    # torch's own policy functions only test isinstance: they work as given
    wrap = pytest.importorskip("torch.distributed.fsdp.wrap")
    assert policy_units(net, functools.partial(wrap.transformer_auto_wrap_policy,
                                               transformer_layer_cls={GPT2Block})) == blocks
    # size-based: wrap a module once the parameters no unit below it holds reach min_num_params, bottom up
    # (torch's _recursive_wrap); the same decisions as torch's function
    block = sum(p.numel() for p in blocks[0].parameters())
    for min_params in (block // 3, block, 10 ** 9):
        ours = policy_units(net, functools.partial(dist.size_based_auto_wrap_policy, min_num_params=min_params))
        theirs = policy_units(net, functools.partial(wrap.size_based_auto_wrap_policy, min_num_params=min_params,
                                                     exclude_wrap_modules={nn.ModuleList, nn.ModuleDict}))
        assert ours == theirs
    assert policy_units(net, functools.partial(dist.size_based_auto_wrap_policy, min_num_params=10 ** 9)) == []
    h = net.transformer.h
    # a third of a block: each block's MLP, then the rest of the block; the root's 928 (wte, wpe, ln_f) stay
    assert policy_units(net, functools.partial(dist.size_based_auto_wrap_policy, min_num_params=block // 3)) == [
        h[0], h[0].mlp, h[1], h[1].mlp]
    assert policy_units(net, functools.partial(dist.size_based_auto_wrap_policy, min_num_params=block)) == list(h)
    # through the wrapper: a unit per block, as the declared default
    model = dist.FullyShardedDataParallel(models.from_pretrained(hf_dirs["gpt2"]),
                                          auto_wrap_policy=dist.ModuleWrapPolicy({GPT2Block}))
    assert [type(u.module).__name__ for u in model.units] == ["GPT2LMHeadModel", "GPT2Block", "GPT2Block"]


def test_bad_unit_arguments_are_refused(hf_dirs):
    import forgegrad.distributed as dist
    from forgegrad import models
    comm.init()
    net = models.from_pretrained(hf_dirs["gpt2"])
    with pytest.raises(ValueError, match="units= or auto_wrap_policy=, not both"):
        dist.FullyShardedDataParallel(net, units=list(net.transformer.h), auto_wrap_policy=dist.ModuleWrapPolicy(
            {nn.Linear}))
    with pytest.raises(TypeError, match="auto_wrap_policy must be callable"):
        dist.FullyShardedDataParallel(net, auto_wrap_policy={nn.Linear})
    with pytest.raises(TypeError, match="module_classes must be Module subclasses"):
        dist.ModuleWrapPolicy({"GPT2Block"})

    class Declares(nn.Module):
        _no_split_modules = ["NoSuchBlock"]

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    with pytest.raises(ValueError, match=r"Declares declares _no_split_modules \['NoSuchBlock'\]"):
        dist.FullyShardedDataParallel(Declares())


def test_declared_blocks_name_module_classes():
    """Every class of forgegrad.models.hf declaring _no_split_modules names Module classes that exist (a typo would
    be a ValueError at wrap time); the families checked end to end are in the tests above and
    tests/test_fsdp_hf_default_units.py."""
    import forgegrad.models.hf  # noqa: F401  (defines the classes)

    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)

    every = list(subclasses(nn.Module))
    names = {c.__name__ for c in every}
    declaring = [c for c in every if "_no_split_modules" in vars(c) and c.__module__.startswith("forgegrad.models")]
    assert len(declaring) >= 15
    for c in declaring:
        assert c._no_split_modules and set(c._no_split_modules) <= names, c
