"""Parent side of the fuzz suite: the child interpreter that runs the cases, and the hypothesis
strategy that draws them (see fuzz_worker.py for what a case is and how it is judged).

Environment: FORGEGRAD_FUZZ_EXAMPLES (total cases per test file, spread over the targets; default a
bounded CI run), FORGEGRAD_FUZZ_SEED (draw other cases than the fixed CI ones), FORGEGRAD_FUZZ_REPORT
(a JSON file for the counts and every failing case), FORGEGRAD_FUZZ_TIMEOUT (seconds one case may
take before it counts as a hang), FORGEGRAD_FUZZ_MEMORY_GB (the child's memory limit, default 6; 0: none),
FORGEGRAD_FUZZ_SANITIZED=1 (set by tools/sanitize.sh: the child runs under ASan + UBSan; see child_env and
fuzz_mutate.BOUNDED_HUGE_ELEMENTS).
"""
from __future__ import annotations

import collections
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile

from hypothesis import strategies as st

import forgegrad
import fuzz_mutate as M

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(forgegrad.__file__)))
TIMEOUT = float(os.environ.get("FORGEGRAD_FUZZ_TIMEOUT", "60"))
STATS = collections.Counter()  # outcome -> cases, printed by conftest at the end of the run
FAILURES = []

# scalar and aliasing mutations are fewer kinds than the array ones: weighted up to be drawn as often
_KINDS = M.ARRAY_KINDS + M.ALIAS_KINDS * 3 + ("scalar",) * 8


def fuzz_settings(n_examples: int):
    """hypothesis settings: derandomized (CI reproduces every run) unless FORGEGRAD_FUZZ_SEED picks
    another seed, for a long run that explores other cases."""
    from hypothesis import HealthCheck, seed, settings
    chosen = os.environ.get("FORGEGRAD_FUZZ_SEED")
    s = settings(max_examples=n_examples, derandomize=chosen is None, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))

    def apply(fn):
        fn = s(fn)
        return seed(int(chosen))(fn) if chosen is not None else fn
    return apply


def examples_per_target(n_targets: int, ci_default: int) -> int:
    total = os.environ.get("FORGEGRAD_FUZZ_EXAMPLES")
    return max(1, int(total) // n_targets) if total else ci_default


def cases(target: str, with_raw: bool = False):
    mutation = st.tuples(st.sampled_from(_KINDS), st.integers(0, 63), st.integers(0, 63)).map(list)
    return st.fixed_dictionaries({
        "target": st.just(target),
        "base": st.integers(0, 15),
        "mutations": st.lists(mutation, min_size=1, max_size=3),
        "seed": st.integers(0, 2 ** 32 - 1),
        "raw": st.booleans() if with_raw else st.just(False),
    })


def child_env(base=None) -> dict:
    """The fuzz child's environment. Without sanitizers the child limits its own address space
    (fuzz_worker.main: RLIMIT_AS, an allocation past it is MemoryError). ASan reserves terabytes of
    address space, so under it (FORGEGRAD_FUZZ_SANITIZED=1) the limit is on the RSS, by ASan's own
    watcher thread: past the soft limit malloc returns NULL (allocator_may_return_null=1), a
    MemoryError as RLIMIT_AS gives; past the hard limit (soft + half of it: a burst between two
    polls) ASan ends the child, which is reported as an "oom" failure, never a pass: neither the
    machine's OOM killer nor a SIGKILL sorts into a clean outcome."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = PYTHON_DIR + os.pathsep + env.get("PYTHONPATH", "")
    limit = int(env.get("FORGEGRAD_FUZZ_MEMORY_GB", "6"))
    if env.get("FORGEGRAD_FUZZ_SANITIZED") == "1" and limit > 0:
        soft = limit << 10
        opts = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + \
            f"allocator_may_return_null=1:soft_rss_limit_mb={soft}:hard_rss_limit_mb={soft + soft // 2}"
    return env


def sanitizer_log(pid: int, env=None) -> str:
    """What ASan / UBSan wrote for process pid where their log_path sends reports to files."""
    env = os.environ if env is None else env
    out = []
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        m = re.search(r"(?:^|:)log_path=([^:]+)", env.get(var, ""))
        if m:
            try:
                with open(f"{m.group(1)}.{pid}", errors="replace") as f:
                    out.append(f.read())
            except OSError:
                pass
    return "".join(out)


def classify_death(rc: int, log: str) -> tuple:
    """(outcome, what) for a child that died without answering: a failure in every case. "oom" where
    the memory limit ended it (ASan's hard RSS limit, or a SIGKILL: the kernel's OOM killer, which
    the limits are there to prevent); "crash" for everything else (a signal such as SIGSEGV or
    SIGABRT, a sanitizer report, an exit)."""
    what = f"killed by signal {-rc}" if rc < 0 else f"exited {rc}"
    if "rss limit exhausted" in log and "ERROR: AddressSanitizer" not in log and "runtime error:" not in log:
        return "oom", f"{what}: past the hard RSS limit ({log.strip().splitlines()[0][:200]})"
    if rc == -9:
        return "oom", f"{what} (SIGKILL, not sent by the harness: the kernel's OOM killer, or another process)"
    return "crash", what


class Worker:
    """One child interpreter running cases; restarted after a crash or a hang."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="forgegrad-fuzz-")
        self.corpus = os.path.join(self.dir, "corpus.pkl")
        self.proc = None
        self.targets = []
        self._buf = b""

    def _start(self):
        env = self.env = child_env()
        self.log = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fuzz_worker.py"), self.corpus],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env)
        self._buf = b""
        ready = self._read(max(TIMEOUT, 600))
        if ready is None or not ready.get("ready"):
            raise RuntimeError(f"the fuzz child did not start: {ready}\n{self._stderr_tail()}")
        self.targets = ready["targets"]

    def _stderr_tail(self, n=3000):
        try:
            with open(os.path.join(self.dir, "stderr.log"), "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def _read(self, timeout):
        """The child's next reply; None on EOF (it died) or 'timeout'."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return "timeout"
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def ensure(self):
        if self.proc is None:
            self._start()
        return self

    def run(self, case: dict) -> dict:
        self.ensure()
        try:
            self.proc.stdin.write((json.dumps(case) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        reply = self._read(TIMEOUT)
        if reply == "timeout":
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            reply = {"ok": False, "outcome": "hang", "detail": f"no answer within {TIMEOUT:.0f} s"}
        elif reply is None:
            pid, rc = self.proc.pid, self.proc.wait()
            self.proc = None
            log = sanitizer_log(pid, self.env)
            outcome, what = classify_death(rc, log)
            reply = {"ok": False, "outcome": outcome,
                     "detail": f"the child {what}\n{self._stderr_tail()}{log[-3000:]}"}
        STATS[reply["outcome"]] += 1
        if not reply["ok"]:
            FAILURES.append((case, reply))
            log = os.environ.get("FORGEGRAD_FUZZ_REPORT")
            if log:  # as they happen: a long run can be followed, and stopped, with what it found kept
                with open(log + ".failures.jsonl", "a") as f:
                    f.write(json.dumps([case, reply]) + "\n")
        return reply

    def close(self) -> int:
        """Ends the child normally; returns its exit status (0 unless it crashed on the way out)."""
        if self.proc is None:
            return 0
        self.proc.stdin.close()
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "hang at exit"
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def check(worker: Worker, case: dict):
    reply = worker.run(case)
    assert reply["ok"], f"{reply['outcome']}: {reply['detail']}\ncase: {json.dumps(case)}"
