"""Recording which fused kernels an op or a model reaches (monkeypatched wrappers around the kernel functions)."""
from __future__ import annotations

from forgegrad.kernels import attention as KA


def record_attention_kernels(monkeypatch) -> dict:
    """{"forward": [...], "backward": [...]}: the softcap of each fused attention forward / backward kernel call,
    appended as they run (the kernels still run)."""
    calls = {"forward": [], "backward": []}
    fwd, bwd = KA.attention_forward, KA.attention_backward

    def forward(*a, softcap=None, **kw):
        calls["forward"].append(softcap)
        return fwd(*a, softcap=softcap, **kw)

    def backward(*a, softcap=None, **kw):
        calls["backward"].append(softcap)
        return bwd(*a, softcap=softcap, **kw)

    monkeypatch.setattr(KA, "attention_forward", forward)
    monkeypatch.setattr(KA, "attention_backward", backward)
    return calls
