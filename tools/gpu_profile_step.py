"""Where a training step's GPU time goes, forgegrad against torch on the same GPU.

    python tools/gpu_profile_step.py [--model gpt|lenet] [--steps 10]

torch.profiler (CUPTI) records every CUDA kernel the process launches, forgegrad's as well as torch's:
for each runtime it prints the wall time per step, the GPU's busy time per step (the kernels' summed
time: the rest is the GPU waiting for the host), the kernel launches per step and the kernels that take
the most time. Needs a GPU and torch built with CUDA; the models are the `cuda` bench suite's GPT
and LeNet steps.
"""
from __future__ import annotations

import argparse
import time


def _step_fns(model: str, torch):
    """{"forgegrad": step, "torch": step}: one training step each, both on cuda (the bench's models)."""
    if model == "gpt":  # 4 layers x 4 heads x 256, batch 16, T 128, AdamW
        from forgegrad.bench.gpt import train_fns
        return train_fns(torch, device="cuda")
    import numpy as np
    from forgegrad.bench._steps import classifier_step_fns
    from forgegrad.bench.cnn import torch_lenet
    from forgegrad.models import LeNet
    rng = np.random.default_rng(0)  # LeNet, batch 64 of 28 x 28, Adam
    x, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
    return classifier_step_fns(LeNet(in_channels=1, num_classes=10, input_size=28), torch_lenet(torch), x, y, torch,
                               device="cuda")


def _kernel_time_us(event) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(event, name, None)
        if value is not None:
            return float(value)
    return 0.0


def _profile(torch, step, sync, steps: int, top: int) -> None:
    for _ in range(3):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    wall = (time.perf_counter() - t0) / steps * 1e3
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        sync()
    kernels = [e for e in prof.key_averages() if _kernel_time_us(e) > 0 and e.device_type.name == "CUDA"]
    busy = sum(_kernel_time_us(e) for e in kernels) / steps / 1e3
    launches = sum(e.count for e in kernels) / steps
    print(f"  wall {wall:.3f} ms/step, GPU busy {busy:.3f} ms/step ({100 * busy / wall:.0f} %), "
          f"{launches:.0f} kernel launches/step")
    for e in sorted(kernels, key=_kernel_time_us, reverse=True)[:top]:
        print(f"  {_kernel_time_us(e) / steps / 1e3:8.3f} ms  x{e.count / steps:5.1f}  {e.key[:110]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("gpt", "lenet"), default="gpt")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    import torch
    import forgegrad.cuda as fcuda
    if not (fcuda.is_available() and torch.cuda.is_available()):
        print(f"needs a GPU for forgegrad and for torch: {fcuda.unavailable_reason() or 'torch has no CUDA'}")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    fns = _step_fns(args.model, torch)
    syncs = {"forgegrad": fcuda.synchronize, "torch": torch.cuda.synchronize}
    for runtime in ("forgegrad", "torch"):
        if fns.get(runtime) is None:
            continue
        print(f"{args.model} train step, {runtime} ({torch.cuda.get_device_name(0)}):")
        _profile(torch, fns[runtime], syncs[runtime], args.steps, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
