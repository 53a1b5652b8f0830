"""Data-parallel scaling over MPI: training throughput at 1 and 2 ranks, allreduce bandwidth against bare
mpi4py, and how much of the gradient communication backward hides.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/ddp_scaling.py [--steps 20]

The driver (this script without --worker) starts every measurement as its own MPI job with the
environment's mpiexec, threads pinned per rank (FORGEGRAD_NUM_THREADS and fg.set_num_threads), and
prints one table. Rows:

* LeNet (1x28x28, batch 64 per rank) and the VAE (784-400-20, batch 128 per rank), Adam, DDP: samples/s
  at 1 rank x 1 thread, 2 ranks x 1 thread (same per-rank batch: twice the samples per step) and
  1 rank x 2 threads at the 2-rank job's global batch. Targets: 2x1 >= 1.8x of 1x1.
* allreduce of a 25 MB float32 buffer: forgegrad.distributed.allreduce and the DDP bucket path
  (Iallreduce + wait + 1/N scale) against bare ``comm.Allreduce(MPI.IN_PLACE, buf)`` on the same
  buffer, interleaved; ratio = bare time / ours (target >= 0.9).
* hidden communication: exposed = (2-rank DDP step time) - (the same step under no_sync, all ranks
  computing at once, no communication); hidden = 1 - exposed / (time the same buckets take to
  allreduce on their own, blocking), with bucket_cap_mb=1 (several buckets) and 25 (the default).
  Exposed time includes waiting for the slower rank, which a busy machine inflates. Also printed: the
  share of gradient bytes whose allreduce had already completed when backward ended (a timing-free
  view of the overlap).
* ZeRO at 2 ranks x 1 thread (``--only zero``): an MLP of 4 Linear(1024, 1024) layers (4.2M parameters,
  16.8 MB), batch 32 per rank, Adam, trained by DDP, ZeroRedundancyOptimizer stage 1, stage 2 and
  stage 3 (FullyShardedDataParallel, one unit per layer, backward prefetch by default; also without
  prefetch, with forward prefetch too, and with reshard_after_forward=False; stages 1 and 2 with
  bucket_cap_mb=4, a layer per bucket), each its own job (``--kinds`` picks some): per-rank bytes of
  parameters, gradients and optimizer state held between steps (DDP: the model, its bucket-view
  gradients and Adam's state; ZeRO-3 also keeps a few freed units' pages for its next gathers,
  "pooled"), the peak resident memory while training above the job's baseline after imports (VmHWM,
  reset by /proc/self/clear_refs once model and optimizer are built, minus VmRSS before the model was
  built), the step time (the slower rank's median) and the minor page faults per step (``getrusage``
  ru_minflt over the timed steps, the rank with more).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))


# ---- workers (run under mpiexec) ----------------------------------------------------------------------
def _model_and_loss(name, batch, rng):
    import forgegrad as fg
    import forgegrad.nn.functional as F
    from forgegrad import models
    if name == "lenet":
        model = models.LeNet()
        x = fg.tensor(rng.random((batch, 1, 28, 28), dtype=np.float32))
        y = fg.tensor(rng.integers(0, 10, batch))
        return model, lambda m: F.cross_entropy(m(x), y)
    model = models.VAE(784, (400,), 20)
    x = fg.tensor((rng.random((batch, 784), dtype=np.float32) > 0.7).astype(np.float32))
    eps = rng.standard_normal((batch, 20)).astype(np.float32)

    def loss(m):
        recon, mu, logvar = m(x, eps=eps)
        return models.vae_loss(recon, x, mu, logvar)
    return model, loss


def worker_train(name, batch, steps, threads, cap):
    import forgegrad as fg
    import forgegrad.distributed as dist
    from forgegrad import optim
    fg.set_num_threads(threads)
    dist.init()
    rank, size = dist.rank(), dist.size()
    fg.manual_seed(0)
    model, loss_fn = _model_and_loss(name, batch, np.random.default_rng(rank))
    net = dist.DistributedDataParallel(model, bucket_cap_mb=cap)
    opt = optim.Adam(net.parameters(), lr=1e-4)

    def step():
        opt.zero_grad()
        loss_fn(net).backward()
        opt.step()
    for _ in range(3):
        step()
    red = net._reducer
    red.bytes_reduced = red.bytes_done_early = 0
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    per_step = (time.perf_counter() - t0) / steps
    done_early = red.bytes_done_early / max(red.bytes_reduced, 1)
    # the same steps without communication (every rank still computing at once, as above)
    with net.no_sync():
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        dist.barrier()
    local = (time.perf_counter() - t0) / steps
    # the same buckets reduced on their own, blocking: the communication a step has to hide
    comm, MPI = red.comm, red.MPI
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        MPI.Request.Waitall([comm.Iallreduce(MPI.IN_PLACE, b.buffer, op=MPI.SUM) for b in red.buckets])
    alone = (time.perf_counter() - t0) / steps
    worst = dist.allreduce(np.array([per_step, local, alone]), op="max")
    done_early = float(dist.allreduce(np.array([done_early]), op="min")[0])
    if rank == 0:
        print(json.dumps({"per_step": worst[0], "samples_per_s": size * batch / worst[0], "local": worst[1],
                          "comm_alone": worst[2], "buckets": len(red.buckets),
                          "done_when_backward_ended": done_early}), flush=True)


def _status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def worker_zero(kind, steps, threads):
    import forgegrad as fg
    import forgegrad.distributed as dist
    import forgegrad.nn.functional as F
    from forgegrad import nn, optim
    fg.set_num_threads(threads)
    dist.init()
    rank = dist.rank()
    base = _status_kb("VmRSS")
    fg.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(1024, 1024), nn.ReLU())])
    rng = np.random.default_rng(rank)
    x = fg.tensor(rng.standard_normal((32, 1024), dtype=np.float32))
    y = fg.tensor(rng.integers(0, 1024, 32))
    if kind == "ddp":
        model = dist.DistributedDataParallel(net)
        opt = optim.Adam(model.parameters(), lr=1e-4)
    else:
        stage = int(kind[4])
        # zero3: the defaults (backward prefetch); zero3np: no prefetch; zero3fp: forward prefetch too
        prefetch = {"zero3np": dict(backward_prefetch=None), "zero3fp": dict(forward_prefetch=True)}.get(kind, {})
        model = dist.FullyShardedDataParallel(net, reshard_after_forward=kind != "zero3k", **prefetch) \
            if stage == 3 else net
        # 4 MB buckets (one layer each); the default 25 would make this model one bucket, packed or staged whole
        opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=stage, bucket_cap_mb=4, lr=1e-4)
    try:  # restart the high-water mark here: the peak of training, not of building the model (init temporaries)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    times = []
    for i in range(steps + 2):
        if i == 2:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    if kind == "ddp":
        params = [p for p in net.parameters()]
        mem = {"params": sum(p._data.nbytes for p in params),
               "grads": sum(b.buffer.nbytes for b in model._reducer.buckets),
               "optimizer_state": sum(v._data.nbytes for st in opt.state.values() for v in st.values()
                                      if hasattr(v, "_data") and v._data.ndim)}
    else:
        mem = opt.memory_bytes()
    mem["peak_rss_above_base"] = (_status_kb("VmHWM") - base) * 1024
    mem["step_s"] = float(np.median(times))
    mem["faults_per_step"] = faults
    everyone = dist.allgather_object(mem)
    if rank == 0:
        print(json.dumps(everyone), flush=True)


def worker_allreduce(mb, iters):
    import forgegrad.distributed as dist
    dist.init()
    from forgegrad.distributed import comm as C
    comm, MPI = C._comm(), C._mpi()
    buf = np.ones(int(mb * 1024 * 1024) // 4, np.float32)
    size = comm.Get_size()

    def bare():
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def ours():
        dist.allreduce(buf)

    def bucket():  # what DDP does per bucket
        MPI.Request.Waitall([comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)])
        buf.__imul__(np.float32(1.0 / size))

    gathered = np.empty((size, buf.size), np.float32)

    def fixed_order():  # the alternative we measured for a rank-ordered sum: allgather, then add rows in order
        comm.Allgather(buf, gathered)
        np.add.reduce(gathered, axis=0, out=buf)

    variants = (("bare", bare), ("ours", ours), ("bucket", bucket), ("fixed_order", fixed_order))
    times = {k: [] for k, _ in variants}
    for _ in range(2):
        for _, fn in variants:
            fn()
    for _ in range(iters):  # interleaved rounds: the machine's noise hits every side alike
        for k, fn in variants:
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    # per round the slower rank's time; then the median and the best round
    per_round = {k: dist.allreduce(np.array(v), op="max") for k, v in times.items()}
    if comm.Get_rank() == 0:
        print(json.dumps({k: {"median": float(np.median(v)), "min": float(v.min())} for k, v in per_round.items()}),
              flush=True)


# ---- driver ---------------------------------------------------------------------------------------------
def _job(ranks, threads, *args):
    from forgegrad.distributed.launch import find_mpiexec
    env = dict(os.environ, FORGEGRAD_NUM_THREADS=str(threads), PYTHONPATH=os.path.join(HERE, "..", "python"))
    cmd = [find_mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="runs per configuration, best kept (default 2)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=("train", "allreduce", "overlap", "zero"), default=None, help="run one part")
    ap.add_argument("--kinds", default=",".join(_ZERO_KINDS), help="the ZeRO configurations to run (comma-separated; "
                    f"default all: {','.join(_ZERO_KINDS)})")
    a = ap.parse_args()
    if a.worker:
        kind, *rest = a.worker
        if kind == "train":
            worker_train(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), float(rest[4]))
        elif kind == "zero":
            worker_zero(rest[0], int(rest[1]), int(rest[2]))
        else:
            worker_allreduce(float(rest[0]), int(rest[1]))
        return
    results = {"cpu": _cpu(), "train": {}, "overlap": {}}
    print(f"CPU: {results['cpu']}; {a.steps} timed steps per run, best of {a.rounds} runs")
    if a.only in (None, "train"):
        print(f"{'workload':<34}{'1 rank x 1 thr':>16}{'2 ranks x 1 thr':>17}{'1 rank x 2 thr':>16}"
              f"{'2x1 / 1x1':>11}{'2x1 / 1x2':>11}", flush=True)
    for name, batch in (("lenet", 64), ("vae", 128)) if a.only in (None, "train") else ():
        best = {}
        for _ in range(a.rounds):  # alternate the configurations round by round
            for key, ranks, threads, b in (("1x1", 1, 1, batch), ("2x1", 2, 1, batch), ("1x2", 1, 2, 2 * batch)):
                r = _job(ranks, threads, "train", name, b, a.steps, threads, 25)
                if key not in best or r["samples_per_s"] > best[key]["samples_per_s"]:
                    best[key] = r
        results["train"][name] = best
        s = {k: v["samples_per_s"] for k, v in best.items()}
        label = f"{'LeNet' if name == 'lenet' else 'VAE 784-400-20'}, batch {batch}/rank, samples/s"
        print(f"{label:<34}{s['1x1']:>16.0f}{s['2x1']:>17.0f}{s['1x2']:>16.0f}{s['2x1'] / s['1x1']:>10.2f}x"
              f"{s['2x1'] / s['1x2']:>10.2f}x", flush=True)
    ar = _job(2, 1, "allreduce", 25, 20) if a.only in (None, "allreduce") else None
    if ar is not None:
        _print_allreduce(ar, results)
    if a.only in (None, "overlap"):
        _overlap(a, results)
    if a.only in (None, "zero"):
        _zero(a, results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


def _print_allreduce(ar, results):
    results["allreduce_25mb"] = ar
    gb = 25 * 1024 * 1024 / 1e9
    print("\nallreduce of 25 MB float32 at 2 ranks, 20 interleaved rounds (median / best round, ms; x = bare time / "
          "this one's):")
    for k, label in (("bare", "bare mpi4py Allreduce(IN_PLACE)"), ("ours", "forgegrad.distributed.allreduce"),
                     ("bucket", "DDP bucket: Iallreduce+wait+1/N"), ("fixed_order", "allgather + rank-ordered sum")):
        m, b = ar[k]["median"], ar[k]["min"]
        print(f"  {label:<34}{1e3 * m:>8.1f} /{1e3 * b:>6.1f}  ({gb / b:.2f} GB/s best)  "
              f"x{ar['bare']['median'] / m:.2f} / x{ar['bare']['min'] / b:.2f}", flush=True)


def _overlap(a, results):
    print("\ncommunication hidden behind backward, 2 ranks x 1 thread:")
    for name, batch in (("lenet", 64), ("vae", 128)):
        for cap in (1, 25):
            r = _job(2, 1, "train", name, batch, a.steps, 1, cap)
            exposed = max(0.0, r["per_step"] - r["local"])
            hidden = min(1.0, max(0.0, 1.0 - exposed / r["comm_alone"]))
            results["overlap"][f"{name}_cap{cap}"] = dict(r, exposed=exposed, hidden=hidden)
            print(f"  {name:<6} bucket_cap_mb={cap:<3} buckets {r['buckets']}: allreduce alone "
                  f"{1e3 * r['comm_alone']:.2f} ms/step, step {1e3 * r['per_step']:.2f} ms vs "
                  f"{1e3 * r['local']:.2f} ms without communication -> {100 * hidden:.0f}% hidden; "
                  f"{100 * r['done_when_backward_ended']:.0f}% of the gradient bytes already reduced when backward "
                  "ended", flush=True)


_ZERO_KINDS = {"ddp": "DDP + Adam", "zero1": "ZeRO-1", "zero2": "ZeRO-2", "zero3": "ZeRO-3 (FSDP)",
               "zero3np": "ZeRO-3, no prefetch", "zero3fp": "ZeRO-3, fwd prefetch", "zero3k": "ZeRO-3, keep fwd->bwd"}


def _zero(a, results):
    print("\nZeRO, 2 ranks x 1 thread, MLP 4 x Linear(1024, 1024) (4.2M parameters), batch 32/rank, Adam; per rank, "
          "MB (best of the runs by step time):")
    print(f"{'':<22}{'params':>8}{'grads':>8}{'Adam state':>12}{'sum':>8}{'pooled':>8}{'peak RSS above base':>21}"
          f"{'step ms':>9}{'faults/step':>12}")
    results["zero"] = {}
    kinds = a.kinds.split(",")
    unknown = [k for k in kinds if k not in _ZERO_KINDS]
    if unknown:
        raise SystemExit(f"--kinds: unknown {unknown}; expected some of {','.join(_ZERO_KINDS)}")
    for kind in kinds:
        label = _ZERO_KINDS[kind]
        runs = [_job(2, 1, "zero", kind, a.steps, 1) for _ in range(a.rounds)]
        best = min(runs, key=lambda r: max(m["step_s"] for m in r))
        results["zero"][kind] = runs
        worst = {k: max(m[k] for m in best) for k in best[0]}
        mb = {k: v / 1e6 for k, v in worst.items() if k != "step_s"}
        spread = ", ".join("%.1f" % (1e3 * max(m["step_s"] for m in r)) for r in runs)
        print(f"{label:<22}{mb['params']:>8.1f}{mb['grads']:>8.1f}{mb['optimizer_state']:>12.1f}"
              f"{mb['params'] + mb['grads'] + mb['optimizer_state']:>8.1f}{mb.get('pooled_params', 0):>8.1f}"
              f"{mb['peak_rss_above_base']:>21.1f}"
              f"{1e3 * worst['step_s']:>9.1f}{worst['faults_per_step']:>12.0f}  (step ms over runs: "
              f"{spread})", flush=True)


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
