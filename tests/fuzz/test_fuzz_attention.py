"""Stress of every attention entry point (tests/fuzz/attention_stress.py) in a child interpreter: shapes on and
around the kernels' tiles, long key runs, odd head dims, every mask form, KV-cache views, paged block tables,
each SIMD path and thread count, against a float64 reference; broken arguments must get a clear error. A crash
or a hang of the child is a failed case.

FORGEGRAD_FUZZ_ATTENTION_EXAMPLES sets the cases (default a bounded CI run of a few hundred), for a long run
under tools/sanitize.sh; FORGEGRAD_FUZZ_SEED draws other cases than the fixed CI ones.
"""
import os
import sys

from hypothesis import given
from hypothesis import strategies as st

import attention_stress as A
import fuzz_util

N = int(os.environ.get("FORGEGRAD_FUZZ_ATTENTION_EXAMPLES", "240"))


class StressWorker(fuzz_util.Worker):
    """fuzz_util.Worker running attention_stress.py (no corpus to record)."""

    def _start(self):
        import subprocess
        env = dict(os.environ, PYTHONPATH=fuzz_util.PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = subprocess.Popen([sys.executable, os.path.join(fuzz_util.HERE, "attention_stress.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env)
        self._buf = b""
        ready = self._read(max(fuzz_util.TIMEOUT, 120))
        if ready is None or not isinstance(ready, dict) or not ready.get("ready"):
            raise RuntimeError(f"the attention stress child did not start: {ready}\n{self._stderr_tail()}")
        self.targets = ready["targets"]

    def run(self, case: dict) -> dict:
        reply = super().run(case)
        log = os.environ.get("FORGEGRAD_FUZZ_REPORT")
        done = sum(fuzz_util.STATS.values())
        if log and done % 100 == 0:  # a long run's progress, kept if it is stopped before its summary
            with open(log + ".progress", "a") as f:
                f.write(f"{done} cases: {dict(fuzz_util.STATS)}\n")
        return reply


def _length(long_ok):
    short = st.sampled_from(A.LENGTHS) | st.integers(1, 300)
    return (short | st.sampled_from(A.LONG)) if long_ok else short


CASES = st.fixed_dictionaries({
    "entry": st.sampled_from(A.ENTRIES),
    "N": st.integers(1, 8),
    "L": _length(False),
    "S": _length(True),
    "E": st.sampled_from(A.HEAD_DIMS),
    "Ev": st.sampled_from(A.HEAD_DIMS),
    "causal": st.booleans(),
    "mask": st.sampled_from(("none", "full", "shared", "row", "strided")),
    "full_rows": st.booleans(),
    "softcap": st.sampled_from((0.0, 0.0, 0.0, 0.5, 5.0, 30.0)),
    "scale": st.sampled_from((0.0, 0.0, 0.0, 0.01, 0.3, 2.0)),  # 0: 1 / sqrt(E)
    "backward": st.booleans(),
    "isa": st.sampled_from(A.ISAS),
    "threads": st.sampled_from((1, 2, 3)),
    "seed": st.integers(0, 2 ** 32 - 1),
})


@fuzz_util.fuzz_settings(N)
@given(case=CASES)
def _stress(worker, case):
    fuzz_util.check(worker, case)


def test_attention_stress():
    worker = StressWorker()
    try:
        _stress(worker)
    finally:
        rc = worker.close()
    assert rc == 0, f"the attention stress child did not exit normally: {rc}"
