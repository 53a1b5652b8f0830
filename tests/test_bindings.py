"""The C++ boundary itself: wrong arrays reaching a binding directly raise clear Python errors."""
import numpy as np
import pytest

import forgegrad as fg


def test_wrong_rank_is_a_value_error_naming_the_argument():
    with pytest.raises(ValueError, match=r"x must be 2-D, got 1-D with shape \(5,\)"):
        fg._C.activation.column_sums(np.zeros(5, np.float32), np.zeros(5, np.float32))


def test_wrong_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="x must be a float32 array, got dtype float64"):
        fg._C.activation.column_sums(np.zeros((2, 5)), np.zeros(5, np.float32))


def test_wrong_output_shape_and_read_only_output():
    x = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"out must have shape \(5,\), got \(4,\)"):
        fg._C.activation.column_sums(x, np.zeros(4, np.float32))
    ro = np.zeros(5, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        fg._C.activation.column_sums(x, ro)
