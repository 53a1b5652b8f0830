"""FullyShardedDataParallel at one rank (a one-process MPI world): a parameter read outside its unit's module
while the unit is freed reads NaN, not zeros that look like values. forgegrad's tied GPT-2 computes its
logits as ``F.linear(x, transformer.wte.weight)`` in the root: under the default units (the embedding a unit
of its own) the logits used to be all zeros, silently, in eval as in training; with a unit per block the
embedding is the root's and the wrapped model equals the plain one."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt2")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def _logits(out):
    return out.logits if hasattr(out, "logits") else out[0] if isinstance(out, tuple) else out


def test_a_tied_head_read_outside_its_unit_gives_nan_and_a_unit_per_block_trains_like_the_plain_model(gpt2_dir):
    import forgegrad.distributed as dist
    from forgegrad import models, optim
    comm.init()
    ids = fg.tensor(np.array([[1, 5, 7, 3, 2], [4, 4, 9, 0, 8]]))
    plain = models.from_pretrained(gpt2_dir)
    assert plain.tied
    with fg.no_grad():
        ref = _logits(plain(ids)).numpy()
    # default units: wte is a unit of its own, freed when the root reads it for the tied head
    wrapped = dist.FullyShardedDataParallel(models.from_pretrained(gpt2_dir))
    with fg.no_grad():
        assert np.isnan(_logits(wrapped(ids)).numpy()).all()  # it used to be all zeros
    assert np.isnan(wrapped.module.transformer.wte.weight.numpy()).all()  # freed
    # a unit per block: the embeddings and the tied head are the root's unit
    net = models.from_pretrained(gpt2_dir)
    model = dist.FullyShardedDataParallel(net, units=list(net.transformer.h))
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.SGD, stage=3, lr=0.5)
    ref_opt = optim.SGD(plain.parameters(), lr=0.5)
    for net_, o in ((plain, ref_opt), (model, opt)):
        o.zero_grad()
        with fg.no_grad():
            np.testing.assert_allclose(_logits(net_(ids)).numpy(), ref, rtol=0, atol=1e-6)
        (_logits(net_(ids)) ** 2).mean().backward()
        o.step()
    got, want = model.state_dict(), plain.state_dict()
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=0, atol=1e-6, err_msg=k)
