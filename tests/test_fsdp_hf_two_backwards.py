"""A transformers BERT (forgegrad.models.from_pretrained) under FullyShardedDataParallel, two forwards then two
separate backwards reaching different units on the two ranks of a real MPI job
(tests/distributed_scripts/fsdp_hf_bert_job.py), against transformers itself on the same global batch."""
import sys

import numpy as np
import pytest
from test_distributed import SCRIPTS, run_job

from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def test_transformers_bert_two_forwards_then_two_backwards(tmp_path):
    """A transformers BERT under FSDP: each rank's two losses read the pooler and the last hidden state in
    opposite orders, so each separate backward skips the pooler's units on one rank. One SGD step (lr 1)
    equals transformers' own step on the mean of both ranks' summed losses."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=40, vocab_size=64,
        max_position_embeddings=32, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0))
    hf.save_pretrained(tmp_path / "bert")
    run_job(2, "fsdp_hf_bert_job.py", tmp_path, tmp_path / "bert", timeout=90)
    got = np.load(tmp_path / "params.npz")
    sys.path.insert(0, SCRIPTS)
    try:
        from fsdp_hf_bert_job import losses
    finally:
        sys.path.remove(SCRIPTS)
    total = sum(sum(losses(lambda x: hf(torch.tensor(x)), r)) for r in (0, 1)) / 2  # the ranks' mean
    total.backward()
    compared = 0
    with torch.no_grad():
        for name, p in hf.named_parameters():
            want = (p - p.grad).numpy()  # SGD, lr 1
            np.testing.assert_allclose(got[name], want, rtol=0, atol=2e-5, err_msg=name)
            compared += 1
            if name.startswith("pooler"):  # a wrong gradient here would show: the step moved it
                assert np.abs(p.grad.numpy()).max() > 1e-3
    assert compared == len(got.files) > 20
