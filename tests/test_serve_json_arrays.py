"""forgegrad serve's own decoder of numeric JSON bodies (_C.serve.json_number_array, used by codecs
for one-input float models): every body it takes must decode to exactly the array of the generic
path (orjson + numpy + conform), bit for bit, and every body it refuses goes to that path, which
answers it or words its error as before."""
import math
import random
import struct
from decimal import Decimal, getcontext

import numpy as np
import pytest

from forgegrad._C import serve as _serve
from forgegrad.serve import codecs
from forgegrad.serve._errors import ServeError
from forgegrad.serve.models import InputSpec

parse = _serve.json_number_array


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def test_shapes_and_values():
    np.testing.assert_array_equal(parse(b"[[1, 2.5], [3e2, -4E-1]]"), [[1, 2.5], [300, -0.4]])
    arr = parse(b" \t\n[ [ [0] ] ]\r\n")
    assert arr.shape == (1, 1, 1) and arr.dtype == np.float64
    assert parse(b"[7]").shape == (1,)
    deep = b"[" * 32 + b"1" + b"]" * 32
    assert parse(deep).shape == (1,) * 32


def test_zero_signs_follow_python():
    # "-0" is an integer literal: Python's int, so +0.0; "-0.0" is a float: -0.0
    arr = parse(b"[-0, -0.0, 0, 0.0, -0e5]")
    assert [bits(x) for x in arr] == [bits(0.0), bits(-0.0), bits(0.0), bits(0.0), bits(-0.0)]


@pytest.mark.parametrize("text", [
    b"", b"   ", b"1", b'"a"', b"{}", b"[]", b"[[]]", b"[[], []]", b"[1,]", b"[,1]", b"[1 2]", b"[1]]", b"[[1]",
    b"[1] x", b"[01]", b"[1.]", b"[.5]", b"[+1]", b"[1e]", b"[1e+]", b"[-]", b"[- 1]", b"[0x10]", b"[NaN]",
    b"[Infinity]", b"[-Infinity]", b"[true]", b"[null]", b'["1"]', b"[{}]", b"[[1], 2]", b"[1, [2]]",
    b"[[1, 2], [3]]", b"[[1], [2, 3]]", b"[[[1]], [2]]", b"[[1], [[2]]]", b"[" * 33 + b"1" + b"]" * 33,
    b"[1e400]", b"[-1e400]", b"[1e-400]", b"[4.9e-324]", b"[2.2250738585072011e-308]",  # beyond normal doubles
    b"[1234567890123456]", b"[-9007199254740993]",  # integers past 15 digits: numpy would keep them int64
    b"[1\x00]", b"[\xef\xbb\xbf1]"])
def test_refused(text):
    assert parse(text) is None


def test_bounds_and_types():
    body = b'{"inputs": [1, 2]}'
    np.testing.assert_array_equal(parse(body, 11, 17), [1, 2])
    for start, stop in ((-1, 5), (5, 4), (0, len(body) + 1)):
        with pytest.raises(ValueError, match="start"):
            parse(body, start, stop)
    with pytest.raises(TypeError):
        parse("[1]")
    np.testing.assert_array_equal(parse(b"[1e39, 1.5]"), [1e39, 1.5])
    assert parse(b"[1e39, 1.5]", float32=True) is None  # float32 overflow: the generic path words it
    assert parse(b"[3.4028235e38]", float32=True) is None  # above FLT_MAX as a double (rounds to it in numpy)
    got = parse(b"[0.1, 3.4028234e38, -16777217]", float32=True)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([0.1, 3.4028234e38, -16777217], np.float64).astype(np.float32))


def _random_number(rng: random.Random) -> str:
    k = rng.random()
    if k < 0.2:
        return repr(rng.uniform(-1, 1))
    if k < 0.35:
        return repr(float(np.float32(rng.gauss(0, 10))))
    if k < 0.45:
        return str(np.float32(rng.gauss(0, 1)))
    if k < 0.55:
        while True:
            d = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
            if math.isfinite(d):
                return repr(d)
    if k < 0.75:
        s = ("-" if rng.random() < 0.5 else "") + str(rng.randint(0, 10 ** rng.randint(0, 25)))
        if rng.random() < 0.7:
            s += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30)))
        if rng.random() < 0.5:
            s += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 330))
        return s
    if k < 0.85:
        return str(rng.randint(-10 ** rng.randint(0, 17), 10 ** rng.randint(0, 17)))
    return "0." + "0" * rng.randint(0, 30) + str(rng.randint(1, 10 ** rng.randint(1, 20)))


def test_numbers_equal_python_floats():
    rng = random.Random(0)
    taken = 0
    for _ in range(3000):
        texts = [_random_number(rng) for _ in range(rng.randint(1, 8))]
        got = parse(("[" + ", ".join(texts) + "]").encode())
        if got is None:
            continue
        taken += 1
        want = [float(int(t)) if t.lstrip("-").isdigit() else float(t) for t in texts]
        assert [bits(x) for x in got] == [bits(x) for x in want], texts
    assert taken > 1500


def test_near_halfway_numbers_round_correctly():
    # decimal texts at and one unit either side of the midpoints between adjacent doubles: the
    # cases where a double-rounded or truncated conversion goes wrong
    getcontext().prec = 60
    rng = random.Random(1)
    for _ in range(400):
        d = rng.uniform(1, 2) * 2.0 ** rng.randint(-60, 60)
        mid = (Decimal(d) + Decimal(math.nextafter(d, math.inf))) / 2
        for digits in (16, 17, 18, 19, 20, 25):
            mantissa, exponent = format(mid, f".{digits}e").split("e")
            for last in {int(mantissa[-1]) - 1, int(mantissa[-1]), int(mantissa[-1]) + 1} & set(range(10)):
                text = mantissa[:-1] + str(last) + "e" + exponent
                got = parse(f"[{text}]".encode())
                assert got is not None and bits(got[0]) == bits(float(text)), text


FLOAT32_IN = [InputSpec("x", np.dtype(np.float32), (3,))]
FLOAT64_IN = [InputSpec("x", np.dtype(np.float64), (None, 2))]


def _decode(fn, *args, generic=False):
    """fn(*args) -> ("ok", result) or ("error", status, message), with or without the decoder."""
    saved = codecs._json_number_array
    if generic:
        codecs._json_number_array = None
    try:
        return ("ok", fn(*args))
    except ServeError as e:
        return ("error", e.status, e.message)
    finally:
        codecs._json_number_array = saved


def _same(a, b):
    assert a[0] == b[0], (a, b)
    if a[0] == "error":
        assert a == b
        return
    (fa, fb), (ma, mb) = (a[1][0], b[1][0]), (a[1][1], b[1][1])
    assert ma == mb and fa.keys() == fb.keys()
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and fa[k].shape == fb[k].shape and fa[k].flags.c_contiguous
        assert fa[k].tobytes() == fb[k].tobytes()


def _bodies(rng):
    for _ in range(400):
        rows = rng.choice([1, 1, 2, 5])
        cols = rng.choice([3, 3, 3, 2, 4])
        arr = [[_random_number(rng) if rng.random() < 0.9 else rng.choice(["1e39", "-3.5e38", "7", "-0"])
                for _ in range(cols)] for _ in range(rows)]
        text = "[" + ", ".join("[" + ", ".join(r) + "]" for r in arr) + "]"
        if rng.random() < 0.2:
            text = text[1:-1] if rows == 1 else text  # one instance, no batch axis
        yield text
    yield from ["[[1, 2, 3], [4, 5]]", "[]", "[[]]", "[[1, 2, NaN]]", "[[1, 2, 1e400]]", "[[[1, 2, 3]]]",
                '[["1", 2, 3]]', "[[true, 2, 3]]", "[[1, 2, 12345678901234567890]]", "[[1, 2, 3]] x"]


@pytest.mark.parametrize("spec", [FLOAT32_IN, FLOAT64_IN], ids=["float32", "float64"])
def test_bodies_decode_as_the_generic_path(spec):
    rng = random.Random(2)
    fast = 0
    for text in _bodies(rng):
        for body in (f'{{"instances": {text}}}', f' {{ "inputs" :{text} }} ', f'{{"instances": {text}, "x": 1}}'):
            b = body.encode()
            fast += codecs._fast_array(b, spec, codecs._TF_TENSOR_BODY) is not None
            _same(_decode(codecs.tf_body, b, spec, False), _decode(codecs.tf_body, b, spec, False, generic=True))
        for body in (text, f'{{"data": {text}}}', f'{{"x": {text}}}'):
            b = body.encode()
            args = (b, "application/json", spec, False)
            _same(_decode(codecs.torchserve_request, *args), _decode(codecs.torchserve_request, *args, generic=True))
    assert fast > 300  # most bodies took the decoder (the rest: refused, as the generic path decides)
