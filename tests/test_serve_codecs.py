"""JSON shortcuts of forgegrad serve (codecs): orjson parses request bodies, with json deciding what
orjson refuses, and writes responses known to be finite. Each must give what json gives."""
import json

import numpy as np
import pytest

from forgegrad.serve import codecs
from forgegrad.serve._errors import ServeError
from forgegrad.serve.models import InputSpec

FLOAT_IN = [InputSpec("x", np.dtype(np.float32), (3,))]
INT_IN = [InputSpec("tokens", np.dtype(np.int64), (3,), max_value=100)]


@pytest.mark.parametrize("body", [b'{"instances": [[NaN, 1.0, 2.0]]}', b'[1, -Infinity]', b'{"a": 1, "a": 2}',
                                  b'{"x": [1.0, 2.5e-3, -0.0, 18446744073709551615]}'])
def test_parse_json_equals_json_loads(body):
    got, want = codecs.parse_json(body), json.loads(body)
    assert json.dumps(got) == json.dumps(want)  # NaN/Infinity literals included (json decides)


def test_integers_past_64_bits():
    # orjson reads them as floats, json as Python ints (numpy: an object array, refused). An integer
    # input refuses them either way; a float input takes orjson's float (what float32 can hold)
    body = b'{"instances": [[1, 2, 123456789012345678901234567890]]}'
    for payload in (codecs.parse_json(body), json.loads(body)):
        with pytest.raises(ServeError) as e:
            codecs.tf_request(payload, INT_IN, False)
        assert e.value.status == 400
    if codecs._fast_loads is not None:
        feeds, _ = codecs.tf_request(codecs.parse_json(body), FLOAT_IN, False)
        np.testing.assert_array_equal(feeds["x"], np.array([[1, 2, 1.2345678901234568e29]], np.float32))


@pytest.mark.parametrize("body", [b"", b"{", b'{"instances": [1,]}', b"\xff\xfe"])
def test_parse_json_errors_are_400(body):
    with pytest.raises(ServeError) as e:
        codecs.parse_json(body)
    assert e.value.status == 400


def test_json_bytes_writes_nonfinite_as_literals_unless_told_finite():
    outputs = {"y": np.array([[0.1, np.nan, np.inf]], np.float32)}
    assert not codecs.all_finite(outputs)
    text = codecs.json_bytes(codecs.tf_response(outputs, "row"), codecs.all_finite(outputs))
    assert b"NaN" in text and b"Infinity" in text
    finite = {"y": np.array([[0.1, -2.5, 3e-8]], np.float32), "k": np.array([[1, 2, 3]], np.int64)}
    assert codecs.all_finite(finite)
    fast = codecs.json_bytes(codecs.tf_response(finite, "row"), True)
    assert json.loads(fast) == json.loads(codecs.json_bytes(codecs.tf_response(finite, "row")))
