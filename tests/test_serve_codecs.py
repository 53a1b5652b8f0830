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


def _npy(arr, version=None) -> bytes:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version)
    return buf.getvalue()


def _same_as_np_load(body: bytes):
    """parse_npy(body) gives what np.load gives (a fresh writeable array), or both refuse it."""
    import io
    try:
        want = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception:
        with pytest.raises(ServeError) as e:
            codecs.parse_npy(body)
        assert e.value.status == 400 and "npy" in e.value.message
        return
    got = codecs.parse_npy(body)
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.writeable
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("arr", [np.arange(7, dtype=np.float32) / 3, np.ones((1, 784), np.float32), np.float64(2.5),
                                 np.arange(6, dtype=np.int64).reshape(2, 3), np.zeros((0, 5), np.float32),
                                 np.array([[True], [False]]), np.arange(4, dtype=np.int8), np.ones((2, 2), np.float16),
                                 np.arange(5, dtype=np.uint32), np.ones((2, 3), np.float32, order="F"),
                                 np.ones(3, ">f4"), np.ones(2, np.complex64)])
@pytest.mark.parametrize("version", [None, (2, 0), (3, 0)])
def test_npy_bodies_read_as_np_load_reads_them(arr, version):
    """np.save's plain headers take parse_npy's own reader (np.load's ast.literal_eval of the header
    cost ~60 us a request); Fortran order, big-endian and other dtypes go to np.load: same arrays."""
    _same_as_np_load(_npy(np.asarray(arr), version))


def test_npy_headers_the_reader_does_not_know_go_to_np_load():
    body = _npy(np.arange(6, dtype=np.float32).reshape(2, 3))
    start, hlen = 10, int.from_bytes(body[8:10], "little")
    header, data = body[start:start + hlen], body[start + hlen:]

    def with_header(h: bytes) -> bytes:
        h = h.rstrip(b" \n")
        h += b" " * ((64 - (start + len(h) + 1) % 64) % 64) + b"\n"
        return body[:8] + len(h).to_bytes(2, "little") + h + data

    for h in (header.replace(b"(2, 3)", b"(3, 2)"), header.replace(b"(2, 3)", b"(6,)"),  # reshaped: still fast
              header.replace(b"'descr': '<f4', ", b"") + b"",  # no descr: np.load refuses
              header.replace(b"(2, 3)", b"(02, 3)"),  # not a Python literal
              header.replace(b"(2, 3)", b"(2, 4)"),  # more items than the data holds
              header.replace(b"(2, 3)", b"(99999999999, 99999999999)"),
              header.replace(b"'<f4'", b"'|O'"),  # object arrays need pickle: refused
              header.replace(b"{'descr'", b"{ 'descr'"),  # another writer's spacing
              header.replace(b"'<f4'", b"'<f4', 'extra': 1")):
        _same_as_np_load(with_header(h))
    # truncated, trailing bytes, a cut header, an unknown format version
    for other in (body[:-1], body + b"\0\0\0\0", body[:9], b"\x93NUMPY\x04\x00" + body[8:]):
        _same_as_np_load(other)
