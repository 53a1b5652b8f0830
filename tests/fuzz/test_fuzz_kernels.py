"""Bad inputs for every public function of forgegrad.kernels and every forgegrad._C binding, run in a
child interpreter: mutations of recorded valid calls must raise a clear error or give what the plain
call gives; calls drawn from a binding's signature alone must raise a clear error or return."""
from hypothesis import given

import pytest

import fuzz_cases
import fuzz_util

KERNELS = sorted("kernel:" + k for k in fuzz_cases.kernel_functions())
BINDINGS = sorted("c:" + k for k in fuzz_cases.c_functions() if k not in fuzz_cases.SIG_SKIP)
SIGNATURES = sorted("sig:" + k for k in fuzz_cases.c_functions() if k not in fuzz_cases.SIG_SKIP)
TARGETS = KERNELS + BINDINGS + SIGNATURES
N = fuzz_util.examples_per_target(len(TARGETS), ci_default=6)


def test_every_function_has_a_base_call(worker):
    missing = sorted(set(KERNELS + BINDINGS) - set(worker.ensure().targets))
    assert not missing, f"no recorded valid call to mutate for {missing} (add one to fuzz_cases._extra_calls)"


@pytest.mark.parametrize("target", TARGETS)
def test_bad_inputs(worker, target):
    @fuzz_util.fuzz_settings(N)
    @given(case=fuzz_util.cases(target))
    def run(case):
        fuzz_util.check(worker, case)

    run()
