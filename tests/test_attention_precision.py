"""Float32 error of the fused attention's gradients over a long causal sequence, against a float64 reference
next to torch's own float32 error: dK and dV sum one term per query row (T = 4096 of them), and summing
each query tile from zero before adding it in (a blocked sum) keeps them at torch's error; a running sum
through every row was 4x torch's."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _rms_rel(a, ref):
    return float(np.sqrt(np.mean((a - ref) ** 2) / np.mean(ref ** 2)))


@pytest.mark.parametrize("causal", [True, False])
def test_long_sequence_gradients_as_accurate_as_torch(causal):
    rng = np.random.default_rng(0)
    q, k, v, g = (rng.standard_normal((1, 1, 4096, 64)).astype(np.float32) for _ in range(4))

    def torch_grads(dtype):
        ts = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in (q, k, v)]
        out = torch.nn.functional.scaled_dot_product_attention(*ts, is_causal=causal)
        out.backward(torch.tensor(g, dtype=dtype))
        return [out.detach().double().numpy()] + [t.grad.double().numpy() for t in ts]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's float32 error at one thread; restored for the tests after this one
    try:
        ref, theirs = torch_grads(torch.float64), torch_grads(torch.float32)
    finally:
        torch.set_num_threads(threads)
    fs = [fg.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = fg.nn.functional.scaled_dot_product_attention(*fs, is_causal=causal)
    out.backward(fg.tensor(g))
    ours = [out.detach().numpy().astype(np.float64)] + [t.grad.numpy().astype(np.float64) for t in fs]
    for name, r, t, o in zip(("out", "dq", "dk", "dv"), ref, theirs, ours):
        err, torch_err = _rms_rel(o, r), _rms_rel(t, r)
        assert err < 1.5 * torch_err + 1e-8, (name, err, torch_err)
