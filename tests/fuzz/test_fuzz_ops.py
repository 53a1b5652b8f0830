"""Bad inputs for every op of the registry (tests/fuzz/fuzz_mutate.py says which), run in a child
interpreter: each must raise a clear error or give what torch gives on the same inputs."""
from hypothesis import given

import pytest

import forgegrad as fg
import fuzz_util

OPS = [op.name for op in fg.ops.all_ops() if op.samples]
N = fuzz_util.examples_per_target(len(OPS), ci_default=8)


@pytest.mark.parametrize("name", OPS)
def test_op_bad_inputs(worker, name):
    @fuzz_util.fuzz_settings(N)
    @given(case=fuzz_util.cases("op:" + name, with_raw=True))
    def run(case):
        fuzz_util.check(worker, case)

    run()
