"""Training-step workloads shared by the suites: the same model, weights and batch on each side."""
from __future__ import annotations

import numpy as np


def classifier_step_fns(model, torch_model, x: np.ndarray, y: np.ndarray, torch, lr: float = 1e-3) -> dict:
    """{"forgegrad": step, "torch": step or None} for a cross-entropy classifier trained with Adam.

    Each call runs forward, loss, backward and the optimizer step. torch_model (built only when
    torch is installed) receives forgegrad's initial weights, so both sides do the same work.
    """
    from .. import nn, optim
    from ..tensor import Tensor
    opt = optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = Tensor(x), Tensor(y)

    def fg_step():
        loss = loss_fn(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    fns = {"forgegrad": fg_step, "torch": None}
    if torch is not None:
        torch_model.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
        topt = torch.optim.Adam(torch_model.parameters(), lr=lr)
        tx, ty, tl = torch.from_numpy(x), torch.from_numpy(y), torch.nn.CrossEntropyLoss()

        def torch_step():
            loss = tl(torch_model(tx), ty)
            topt.zero_grad()
            loss.backward()
            topt.step()

        fns["torch"] = torch_step
    return fns
