import json
import os

import pytest

import fuzz_util


@pytest.fixture(scope="module")
def worker():
    """The child interpreter the module's cases run in; it must end normally (exit status 0)."""
    w = fuzz_util.Worker()
    yield w
    rc = w.close()
    assert rc == 0, f"the fuzz child did not exit normally: {rc}"


def pytest_terminal_summary(terminalreporter):
    stats = fuzz_util.STATS
    if not stats:
        return
    total = sum(stats.values())
    line = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()))
    terminalreporter.write_line(f"fuzz: {total} cases: {line}")
    path = os.environ.get("FORGEGRAD_FUZZ_REPORT")
    if path:  # the long run's figures and every failing case, for the README and for triage
        with open(path, "w") as f:
            json.dump({"stats": dict(stats), "failures": fuzz_util.FAILURES}, f, indent=1)
