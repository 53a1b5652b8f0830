"""Training-step workloads shared by the suites: the same model, weights and batch on each side."""
from __future__ import annotations

import numpy as np


def _step(opt, loss_fn):
    """One training step: loss, zero_grad, backward, opt.step(); returns the loss (before the update).
    The same code for forgegrad and torch, whose optimizers and tensors share these names."""
    def step():
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    return step


def adam_step_fns(model, torch_model, fg_loss, torch_loss, torch, lr: float = 1e-3) -> dict:
    """{"forgegrad": step, "torch": step or None}: each step computes the loss (fg_loss() on the
    forgegrad side, torch_loss() on the torch side, both without arguments), runs backward and an
    Adam step, and returns the loss (before the update). torch_model must already hold forgegrad's
    weights; it and torch_loss are unused when torch is None."""
    from .. import optim
    fns = {"forgegrad": _step(optim.Adam(model.parameters(), lr=lr), fg_loss), "torch": None}
    if torch is not None:
        fns["torch"] = _step(torch.optim.Adam(torch_model.parameters(), lr=lr), torch_loss)
    return fns


def classifier_step_fns(model, torch_model, x: np.ndarray, y: np.ndarray, torch, lr: float = 1e-3,
                        device: str = "cpu") -> dict:
    """{"forgegrad": step, "torch": step or None} for a cross-entropy classifier trained with Adam.

    Each call runs forward, loss, backward and the optimizer step. torch_model (built only when
    torch is installed) receives forgegrad's initial weights, so both sides do the same work. Both
    models, the batch and the optimizer state live on ``device`` ("cpu" or "cuda").
    """
    from .. import nn
    from ..tensor import Tensor
    model.to(device)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = Tensor._stored(x).to(device), Tensor._stored(y).to(device)
    torch_loss = None
    if torch is not None:
        torch_model.load_state_dict({k: torch.from_numpy(v.cpu().numpy().copy())
                                     for k, v in model.state_dict().items()})
        torch_model.to(device)
        tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        tl = torch.nn.CrossEntropyLoss()

        def torch_loss():
            return tl(torch_model(tx), ty)

    return adam_step_fns(model, torch_model, lambda: loss_fn(model(xt), yt), torch_loss, torch, lr)


def layer_fns(build, x: np.ndarray, gy: np.ndarray, backward: bool) -> dict:
    """{"forgegrad": fn, "torch": fn or None} for one layer with weight and bias: ``build(nn)`` makes it from
    forgegrad.nn or torch.nn (torch's gets forgegrad's weights). fn runs the forward under no_grad, or with
    ``backward`` the forward and the input, weight and bias gradients for the output gradient gy."""
    import forgegrad as fg
    from ._timing import optional_import
    torch = optional_import("torch")
    fg.manual_seed(0)
    ours = build(fg.nn)
    fx, fgy = fg.tensor(x, requires_grad=backward), fg.tensor(gy)

    def fg_fwd():
        with fg.no_grad():
            ours(fx)

    def fg_step():
        fx.grad = ours.weight.grad = ours.bias.grad = None
        (ours(fx) * fgy).sum().backward()

    fns = {"forgegrad": fg_step if backward else fg_fwd, "torch": None}
    if torch is not None:
        theirs = build(torch.nn)
        theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
        tx, tgy = torch.tensor(x, requires_grad=backward), torch.tensor(gy)

        def t_fwd():
            with torch.no_grad():
                theirs(tx)

        def t_step():
            tx.grad = theirs.weight.grad = theirs.bias.grad = None
            theirs(tx).backward(tgy)

        fns["torch"] = t_step if backward else t_fwd
    return fns
