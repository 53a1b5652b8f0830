"""forgegrad.data.transforms: batch-level augmentation (shapes, seeding, exactness against numpy, errors)."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.data import transforms as T


def _batch(n=5, c=2, h=7, w=6, dtype=np.float32):
    return np.arange(n * c * h * w, dtype=dtype).reshape(n, c, h, w) + 1  # +1: no pixel equals the zero fill


def _random_transforms(seed):
    return [T.RandomCrop(4, padding=1, seed=seed), T.RandomShift(2, seed=seed),
            T.RandomHorizontalFlip(seed=seed), T.RandomRotation(15, seed=seed), T.GaussianNoise(0.1, seed=seed)]


@pytest.mark.parametrize("idx", range(5))
def test_shapes_dtypes_and_input_kinds(idx):
    x = _batch()
    t = _random_transforms(0)[idx]
    out = t(x)
    expected = (5, 2, 4, 4) if idx == 0 else x.shape
    assert isinstance(out, np.ndarray) and out.shape == expected and out.dtype == np.float32
    single = t(x[0])                                 # (C, H, W) image
    assert single.shape == expected[1:]
    tout = t(fg.tensor(x))                           # Tensor in -> Tensor out
    assert isinstance(tout, fg.Tensor) and tout.shape == expected and tout.dtype == np.float32
    np.testing.assert_array_equal(x, _batch())       # input left untouched


@pytest.mark.parametrize("idx", range(5))
def test_seeded_transforms_are_repeatable(idx):
    x = _batch(n=16)
    a, b = _random_transforms(3)[idx], _random_transforms(3)[idx]
    first = a(x)
    np.testing.assert_array_equal(first, b(x))       # same seed, same results
    second = a(x)
    assert not np.array_equal(first, second)         # the stream advances between calls
    np.testing.assert_array_equal(second, b(x))
    # an explicit Generator works the same as a seed
    c = type(a).__new__(type(a))
    c.__dict__.update(a.__dict__)
    c._generator = np.random.default_rng(3)
    np.testing.assert_array_equal(c(x), first)


def test_global_generator_is_used_without_seed():
    x = _batch(n=16)
    t = T.RandomShift(2)
    fg.manual_seed(11)
    first = t(x)
    fg.manual_seed(11)
    np.testing.assert_array_equal(t(x), first)


def test_random_crop_matches_numpy_reference():
    x = _batch(n=6, c=3, h=5, w=7)
    gen = np.random.default_rng(5)
    out = T.RandomCrop((3, 4), padding=(1, 2), generator=gen)(x)
    # replay the draws: tops then lefts, one per image
    ref_gen = np.random.default_rng(5)
    tops, lefts = ref_gen.integers(0, 5 + 2 - 3 + 1, 6), ref_gen.integers(0, 7 + 4 - 4 + 1, 6)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)))
    for i in range(6):
        np.testing.assert_array_equal(out[i], padded[i, :, tops[i]:tops[i] + 3, lefts[i]:lefts[i] + 4])


def test_random_crop_covers_all_offsets_and_full_size_is_identity():
    x = _batch(n=1, c=1, h=3, w=3)
    np.testing.assert_array_equal(T.RandomCrop(3, seed=0)(x), x)
    t = T.RandomCrop(3, padding=1, seed=0)
    seen = {t(x).tobytes() for _ in range(200)}
    assert len(seen) == 9                            # all 3x3 offsets into the 5x5 padded image


def test_random_shift_matches_numpy_reference():
    x = _batch(n=8, c=2, h=5, w=6)
    out = T.RandomShift((2, 1), seed=9)(x)
    g = np.random.default_rng(9)
    dy, dx = g.integers(-2, 3, 8), g.integers(-1, 2, 8)
    for i in range(8):
        ref = np.zeros_like(x[i])
        for r in range(5):
            for c in range(6):
                if 0 <= r - dy[i] < 5 and 0 <= c - dx[i] < 6:
                    ref[:, r, c] = x[i, :, r - dy[i], c - dx[i]]
        np.testing.assert_array_equal(out[i], ref)
    np.testing.assert_array_equal(T.RandomShift(0, seed=1)(x), x)


def test_horizontal_flip_matches_numpy_reference():
    x = _batch(n=10)
    out = T.RandomHorizontalFlip(p=0.5, seed=2)(x)
    flipped = np.random.default_rng(2).random(10) < 0.5
    assert 0 < flipped.sum() < 10
    for i in range(10):
        np.testing.assert_array_equal(out[i], x[i, :, :, ::-1] if flipped[i] else x[i])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0, seed=0)(x), x[..., ::-1])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=0.0, seed=0)(x), x)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotation_by_zero_is_identity(interpolation):
    x = _batch(n=3, c=2, h=7, w=5)
    np.testing.assert_array_equal(T.RandomRotation((0, 0), interpolation=interpolation)(x), x)
    np.testing.assert_array_equal(T.RandomRotation(0, interpolation=interpolation, seed=0)(x), x)


@pytest.mark.parametrize("side", [4, 5])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotation_by_90_matches_rot90(side, interpolation):
    x = _batch(n=2, c=3, h=side, w=side)
    out = T.RandomRotation((90, 90), interpolation=interpolation)(x)
    np.testing.assert_array_equal(out, np.rot90(x, k=1, axes=(2, 3)))  # counter-clockwise, as torchvision
    out = T.RandomRotation((-90, -90), interpolation=interpolation)(x)
    np.testing.assert_array_equal(out, np.rot90(x, k=-1, axes=(2, 3)))


def test_rotation_small_angle_bilinear_vs_point_formula():
    # one pixel of a smooth image, resampled by hand: the source of output (r, c) is the inverse rotation
    h = w = 9
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = (0.3 * yy + 0.7 * xx)[None, None].astype(np.float32)     # linear: bilinear resampling is exact inside
    out = T.RandomRotation((10, 10))(img)[0, 0]
    th = np.deg2rad(10.0)
    for r, c in [(4, 4), (3, 5), (5, 2)]:
        y, x = r - 4.0, c - 4.0
        sx, sy = np.cos(th) * x - np.sin(th) * y + 4, np.sin(th) * x + np.cos(th) * y + 4
        np.testing.assert_allclose(out[r, c], 0.3 * sy + 0.7 * sx, rtol=1e-5, atol=1e-5)
    assert out[0, 0] < img[0, 0, 0, 0] + 1  # corners partly come from outside (zero fill)


def test_rotation_keeps_integer_dtype_and_fill():
    x = np.full((1, 1, 6, 6), 200, dtype=np.uint8)
    out = T.RandomRotation((45, 45), fill=7)(x)
    assert out.dtype == np.uint8 and out[0, 0, 0, 0] == 7 and out[0, 0, 3, 3] == 200


def test_gaussian_noise_statistics_and_zero_std():
    x = np.zeros((64, 1, 16, 16), dtype=np.float32)
    out = T.GaussianNoise(0.5, seed=0)(x)
    assert abs(out.mean()) < 0.02 and abs(out.std() - 0.5) < 0.02
    np.testing.assert_array_equal(T.GaussianNoise(0.0, seed=0)(x), x)


def test_normalize_matches_formula():
    x = np.random.default_rng(0).random((4, 3, 5, 5)).astype(np.float32)
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    out = T.Normalize(mean, std)(x)
    ref = (x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(T.Normalize(0.5, 2.0)(x[0]), (x[0] - 0.5) / 2.0, rtol=1e-6)
    out_u8 = T.Normalize([128], [64])(np.full((1, 1, 2, 2), 192, np.uint8))
    assert out_u8.dtype == np.float32 and np.all(out_u8 == 1.0)


def test_compose_applies_in_order():
    x = _batch(n=4)
    t = T.Compose([T.Normalize(1.0, 2.0), T.RandomHorizontalFlip(p=1.0)])
    np.testing.assert_array_equal(t(x), ((x - 1.0) / 2.0)[..., ::-1])
    assert "Normalize" in repr(t) and "RandomHorizontalFlip" in repr(t)


def test_errors():
    with pytest.raises(ValueError, match="expected a batch"):
        T.RandomShift(1, seed=0)(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="expected a batch"):
        T.Normalize(0, 1)(np.zeros((1, 1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="larger than the padded image"):
        T.RandomCrop(7, padding=1, seed=0)(np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        T.RandomCrop(0)
    with pytest.raises(ValueError, match="padding"):
        T.RandomCrop(3, padding=-1)
    with pytest.raises(ValueError, match="max_shift"):
        T.RandomShift(1.5)
    with pytest.raises(ValueError, match="probability"):
        T.RandomHorizontalFlip(p=1.5)
    with pytest.raises(ValueError, match="degrees"):
        T.RandomRotation(-5)
    with pytest.raises(ValueError, match="degrees"):
        T.RandomRotation((10, -10))
    with pytest.raises(ValueError, match="interpolation"):
        T.RandomRotation(5, interpolation="cubic")
    with pytest.raises(ValueError, match="std must be a number"):
        T.GaussianNoise(-1.0)
    with pytest.raises(TypeError, match="floating-point"):
        T.GaussianNoise(0.1, seed=0)(np.zeros((1, 1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="non-zero"):
        T.Normalize([0.0], [0.0])
    with pytest.raises(ValueError, match="2 values but the images have 3 channels"):
        T.Normalize([0.0, 1.0], [1.0, 1.0])(np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="either generator or seed"):
        T.RandomShift(1, generator=np.random.default_rng(0), seed=1)
    with pytest.raises(TypeError, match="generator must be"):
        T.RandomShift(1, generator="abc")
    with pytest.raises(TypeError, match="callable"):
        T.Compose([T.RandomShift(1), 3])


def test_dataloader_transform_is_applied_to_inputs_only():
    x = _batch(n=10, c=1, h=4, w=4)
    y = np.arange(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, transform=T.RandomHorizontalFlip(p=1.0))
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0]._data for b in batches]), x[..., ::-1])
    np.testing.assert_array_equal(np.concatenate([b[1]._data for b in batches]), y)
    # the item-by-item collation path gets it too
    loader = DataLoader(TensorDataset(x, y), batch_size=4, transform=T.Normalize(1.0, 2.0),
                        collate_fn=lambda s: (np.stack([a._data for a, _ in s]), np.stack([b._data for _, b in s])))
    np.testing.assert_allclose(next(iter(loader))[0], (x[:4] - 1.0) / 2.0)
    # a non-tuple batch is transformed as a whole
    plain = DataLoader(TensorDataset(x), batch_size=3, collate_fn=lambda s: np.stack([a[0]._data for a in s]),
                       transform=T.RandomHorizontalFlip(p=1.0))
    np.testing.assert_array_equal(next(iter(plain)), x[:3, ..., ::-1])
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(TensorDataset(x, y), transform=5)


def test_dataloader_seeded_augmentation_repeats():
    x = _batch(n=12, c=1, h=5, w=5)
    ds = TensorDataset(x, np.arange(12))

    def run():
        loader = DataLoader(ds, batch_size=5, shuffle=True, seed=1, transform=T.RandomShift(1, seed=2))
        return [b[0]._data.copy() for b in loader]

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)
