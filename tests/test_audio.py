"""forgegrad.data.audio: WAV files written by Python's wave module (and by hand for float, EXTENSIBLE and G.711)
decode to their samples; the resampler is scipy.signal.resample_poly's and keeps a tone's frequency and amplitude
while removing one above the new Nyquist frequency; broken and hostile files are clear errors."""
import io
import struct
import sys
import wave

import numpy as np
import pytest

from forgegrad.data.audio import UnsupportedAudioFormat, load_audio, read_audio, read_wav, resample, sniff_format


def _wave_module(ints: np.ndarray, rate: int, width: int) -> bytes:
    """A PCM WAV file of ``ints`` (frames, channels) written by the standard library."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(ints.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 3:
            b = ints.astype("<i4").view(np.uint8).reshape(ints.shape + (4,))[..., :3]
            w.writeframes(b.tobytes())
        else:
            w.writeframes(ints.astype({1: "u1", 2: "<i2", 4: "<i4"}[width]).tobytes())
    return buf.getvalue()


def _by_hand(payload: bytes, code: int, channels: int, rate: int, bits: int, extensible: bool = False,
             extra: bytes = b"") -> bytes:
    """A WAV file with a hand-made fmt chunk (``extensible``: WAVE_FORMAT_EXTENSIBLE around ``code``) and
    ``extra`` chunks before the data."""
    align = channels * bits // 8
    if extensible:
        guid = struct.pack("<H", code) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * align, align, bits, 22, bits, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", code, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra + b"data" + struct.pack("<I", len(payload))
    body += payload + (b"\x00" if len(payload) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("width,channels", [(1, 1), (2, 2), (3, 1), (3, 3), (4, 2)])
def test_integer_pcm_from_the_wave_module(width, channels):
    rng = np.random.default_rng(width * 10 + channels)
    bits = 8 * width
    if width == 1:
        ints = rng.integers(0, 256, size=(50, channels))
        want = (ints - 128) / 128
    else:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1)
        ints = np.concatenate([rng.integers(lo, hi, size=(48, channels)), np.full((1, channels), lo),
                               np.full((1, channels), hi - 1)])
        want = ints / 2 ** (bits - 1)
    samples, rate = read_wav(_wave_module(ints, 22050, width))
    assert rate == 22050 and samples.dtype == np.float32 and samples.shape == (50, channels)
    np.testing.assert_allclose(samples, want, rtol=0, atol=1e-7)
    assert samples.min() >= -1 and samples.max() <= 1  # (32-bit: 1 - 2**-31 rounds to 1 in float32)


@pytest.mark.parametrize("extensible", [False, True])
def test_float_and_extensible(extensible):
    x = np.random.default_rng(0).uniform(-1, 1, size=(40, 2)).astype(np.float32)
    samples, rate = read_wav(_by_hand(x.astype("<f4").tobytes(), 3, 2, 48000, 32, extensible))
    assert rate == 48000
    np.testing.assert_array_equal(samples, x)
    samples, _ = read_wav(_by_hand(x.astype("<f8").tobytes(), 3, 2, 48000, 64, extensible))
    np.testing.assert_array_equal(samples, x)
    ints = (x * 32767).astype("<i2")
    samples, _ = read_wav(_by_hand(ints.tobytes(), 1, 2, 8000, 16, extensible))
    np.testing.assert_allclose(samples, ints / 32768, atol=1e-7)


def test_g711_mu_law_and_a_law():
    """G.711's decoding (ITU-T's reference values): mu-law 0xFF is 0, 0x00 and 0x80 the extremes -32124 / 32124;
    A-law 0xD5 / 0x55 are +-8, 0xAA / 0x2A the extremes +-32256."""
    mu, _ = read_wav(_by_hand(bytes([0xFF, 0x00, 0x80, 0x7F]), 7, 1, 8000, 8))
    np.testing.assert_array_equal(mu[:, 0] * 32768, [0, -32124, 32124, 0])
    a, _ = read_wav(_by_hand(bytes([0xD5, 0x55, 0xAA, 0x2A]), 6, 1, 8000, 8))
    np.testing.assert_array_equal(a[:, 0] * 32768, [8, -8, 32256, -32256])


def test_chunks_before_data_odd_sizes_streamed_sizes_and_partial_frames():
    x = np.arange(-6, 6, dtype="<i2").reshape(6, 2)
    extra = b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # an odd-sized chunk and its pad byte
    file = _by_hand(x.tobytes(), 1, 2, 16000, 16, extra=extra)
    np.testing.assert_allclose(read_wav(file)[0], x / 32768)
    data_at = file.index(b"data")
    streamed = file[:data_at + 4] + b"\xff\xff\xff\xff" + file[data_at + 8:] + b"\x07"  # + a partial frame
    np.testing.assert_allclose(read_wav(streamed)[0], x / 32768)


def test_load_audio_mixes_channels_and_resamples():
    scipy_signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(3)
    ints = rng.integers(-20000, 20000, size=(8000, 2))
    mono = load_audio(_wave_module(ints, 8000, 2), sampling_rate=16000)
    want = scipy_signal.resample_poly((ints / 32768).mean(axis=1), 2, 1)
    assert mono.dtype == np.float32 and mono.shape == (16000,)
    np.testing.assert_allclose(mono, want, atol=1e-6)
    same = load_audio(_wave_module(ints[:, :1], 16000, 2), sampling_rate=16000)
    np.testing.assert_allclose(same, ints[:, 0] / 32768, atol=1e-7)


def test_load_audio_bounds_the_resampled_samples_of_a_wav_file():
    """A low-rate WAV file is small but resamples to many more samples (1 kHz 8-bit to 16 kHz: 16 float32 samples a
    byte): ``max_samples`` bounds what load_audio returns, for WAV as for the compressed formats, and is checked
    before anything is resampled."""
    ints = np.full((1000, 1), 128)
    wav = _wave_module(ints, 1000, 1)
    with pytest.raises(ValueError, match="max_samples|16000 samples"):
        load_audio(wav, sampling_rate=16000, max_samples=15999)
    assert load_audio(wav, sampling_rate=16000, max_samples=16000).shape == (16000,)
    with pytest.raises(ValueError, match="samples"):  # the file's own samples, before resampling
        load_audio(_wave_module(np.zeros((1000, 2), np.int64), 16000, 2), sampling_rate=16000, max_samples=1999)
    with pytest.raises(ValueError, match="max_samples"):
        load_audio(wav, max_samples=0)


@pytest.mark.parametrize("orig,new,n", [(44100, 16000, 4410), (8000, 16000, 801), (48000, 16000, 999),
                                        (22050, 16000, 3001), (16000, 8000, 1000), (11025, 16000, 7),
                                        (32000, 16000, 1), (37800, 16000, 500)])
def test_resample_is_scipy_resample_poly(orig, new, n):
    scipy_signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(n).standard_normal((2, n))
    g = np.gcd(orig, new)
    want = scipy_signal.resample_poly(x, new // g, orig // g, axis=-1)
    got = resample(x, orig, new)
    assert got.shape == want.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert resample(x.astype(np.float32), orig, new).dtype == np.float32


def test_an_odd_rate_is_resampled_at_the_nearest_small_ratio():
    """44101 Hz to 16 kHz reduces to 16000 / 44101: resample_poly's filter would have 882,021 taps. The nearest ratio
    of at most 1000 phases is within ~1e-6, so a tone comes out as resample_poly's exact ratio gives it."""
    scipy_signal = pytest.importorskip("scipy.signal")
    x = _tone(1000, 44101, seconds=0.5)
    got, want = resample(x, 44101, 16000), scipy_signal.resample_poly(x, 16000, 44101)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-3)


def _tone(freq, rate, seconds=1.0, amplitude=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def _spectrum_peak(y, rate):
    """(frequency, amplitude) of the strongest bin of a Hann-windowed spectrum, away from the edges."""
    w = np.hanning(len(y))
    spec = np.abs(np.fft.rfft(y * w)) * 2 / w.sum()
    k = int(np.argmax(spec))
    return k * rate / len(y), spec[k]


def test_a_tone_keeps_its_frequency_and_amplitude_and_one_above_nyquist_is_removed():
    y = resample(_tone(1000, 44100), 44100, 16000)
    freq, amp = _spectrum_peak(y[800:-800], 16000)
    assert abs(freq - 1000) <= 16000 / len(y[800:-800]) and abs(amp - 0.5) < 0.01
    # 11 kHz is above 16 kHz's Nyquist (8 kHz): removed, where keeping every third sample of 48 kHz folds it to 5 kHz
    for rate in (44100, 48000):
        high = resample(_tone(11000, rate), rate, 16000)
        assert np.abs(high[800:-800]).max() < 1e-3
    freq, amp = _spectrum_peak(_tone(11000, 48000)[::3], 16000)
    assert freq == pytest.approx(5000, abs=2) and amp > 0.4


@pytest.mark.parametrize("data,message", [
    (b"", "shorter than a RIFF header"),
    (b"ID3\x04" + b"\x00" * 60, "MP3"),
    (b"fLaC" + b"\x00" * 60, "FLAC"),
    (b"OggS" + b"\x00" * 60, "Ogg"),
    (b"hello world, not audio", "unrecognised"),
], ids=["empty", "mp3", "flac", "ogg", "text"])
def test_other_formats_are_refused_by_name(data, message):
    with pytest.raises(UnsupportedAudioFormat, match=message) as e:
        read_wav(data)
    assert "WAV" in str(e.value)


def _patched(file: bytes, offset: int, fmt: str, value) -> bytes:
    """``file`` with a field of the fmt chunk (offset from its payload) replaced."""
    at = file.index(b"fmt ") + 8 + offset
    return file[:at] + struct.pack(fmt, value) + file[at + struct.calcsize(fmt):]


def test_broken_files_are_clear_errors():
    good = _by_hand(np.zeros(8, "<i2").tobytes(), 1, 1, 16000, 16)
    cases = [
        (good[:18], "no fmt chunk"),  # cut inside the fmt chunk's header
        (good[:30], "truncated"),  # the fmt chunk declares more than there is
        (good[:good.index(b"data")], "no data chunk"),
        (_patched(good, 2, "<H", 0), "0 channels"),
        (_patched(good, 4, "<I", 0), "sample rate 0"),
        (_patched(good, 4, "<I", 4_000_000_000), "outside"),
        (_patched(good, 14, "<H", 12), "12-bit"),
        (_patched(good, 12, "<H", 7), "block align 7"),
        (_patched(good, 0, "<H", 2), "0x0002"),  # MS ADPCM: compressed
        (_by_hand(np.array([np.nan], "<f4").tobytes(), 3, 1, 16000, 32), "NaN"),
    ]
    data_at = good.index(b"data")
    absurd = good[:data_at + 4] + struct.pack("<I", 2 ** 31) + good[data_at + 8:]  # 2 GiB declared, 16 bytes there
    cases.append((absurd, "declares 2147483648 bytes"))
    fmt_at = good.index(b"fmt ")
    swapped = good[:fmt_at] + good[data_at:] + good[fmt_at:data_at]
    cases.append((swapped, "before any fmt chunk"))
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            read_wav(data)


def test_empty_data_chunk_and_sniffing():
    samples, rate = read_wav(_by_hand(b"", 1, 2, 16000, 16))
    assert samples.shape == (0, 2) and rate == 16000
    assert load_audio(_by_hand(b"", 1, 1, 8000, 16)).shape == (0,)
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVE") == "WAV"
    assert sniff_format(b"\x00\x00\x00\x20ftypM4A ") == "MP4/M4A"


def test_resample_arguments():
    with pytest.raises(ValueError, match="orig_freq"):
        resample(np.zeros(4), 0, 16000)
    with pytest.raises(ValueError, match="new_freq"):
        resample(np.zeros(4), 8000, 16000.5)
    with pytest.raises(ValueError, match="real samples"):
        resample(np.array(["a"]), 8000, 16000)


# ---- FLAC, MP3, Ogg and AIFF through soundfile (libsndfile), its wheels in the test extra ----------------------------

def _sf_file(x, rate, fmt, subtype, **kwargs) -> bytes:
    """``x`` (frames, channels) written by soundfile (libsndfile) as ``fmt``/``subtype``, in memory."""
    sf = pytest.importorskip("soundfile")
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype, **kwargs)
    return buf.getvalue()


def _flac_total_samples(flac: bytes, n: int) -> bytes:
    """``flac`` with the total sample count of its STREAMINFO block (36 bits at bytes 21-25) set to ``n``."""
    d = bytearray(flac)
    d[21] = (d[21] & 0xF0) | (n >> 32)
    d[22:26] = struct.pack(">I", n & 0xFFFFFFFF)
    return bytes(d)


@pytest.mark.parametrize("width,channels,rate", [(2, 2, 44100), (3, 1, 48000), (2, 1, 16000)])
def test_flac_decodes_to_the_wav_files_samples(width, channels, rate):
    """FLAC is lossless: the samples libsndfile gives are the WAV decoder's for the same integers, bit for bit."""
    bits = 8 * width
    rng = np.random.default_rng(bits + channels)
    ints = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(3000, channels))
    ints[:2] = [[-(2 ** (bits - 1))], [2 ** (bits - 1) - 1]]  # the extremes
    flac = _sf_file(ints.astype(np.int32) << (32 - bits), rate, "FLAC", f"PCM_{bits}")
    assert sniff_format(flac) == "FLAC"
    want, want_rate = read_wav(_wave_module(ints, rate, width))
    got, got_rate = read_audio(flac)
    assert got_rate == want_rate == rate and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(load_audio(flac, 16000), load_audio(_wave_module(ints, rate, width), 16000))


@pytest.mark.parametrize("fmt,kwargs", [("AIFF", {}), ("RF64", {}), ("WAV", {"endian": "BIG"})],
                         ids=["aiff", "rf64", "rifx"])
def test_aiff_rf64_and_big_endian_wav_are_the_wav_files_samples(fmt, kwargs):
    ints = np.random.default_rng(5).integers(-32768, 32768, size=(500, 2))
    data = _sf_file(ints.astype(np.int16), 22050, fmt, "PCM_16", **kwargs)
    got, rate = read_audio(data)
    assert rate == 22050
    np.testing.assert_array_equal(got, read_wav(_wave_module(ints, 22050, 2))[0])


@pytest.mark.parametrize("fmt,subtype,rate", [("OGG", "VORBIS", 44100), ("OGG", "VORBIS", 48000),
                                             ("OGG", "OPUS", 48000), ("MP3", "MPEG_LAYER_III", 44100),
                                             ("MP3", "MPEG_LAYER_III", 48000)])
def test_ogg_vorbis_opus_and_mp3_keep_a_tones_duration_frequency_and_amplitude(fmt, subtype, rate):
    """One second of a 1 kHz stereo tone (0.5 left, 0.25 right) through a lossy codec: the same number of frames,
    the tone's frequency within one FFT bin, its amplitude within 3%, each sample within 0.05 of the original (the
    decoder removes the encoder's delay); mixed to mono at 16 kHz, the channels' mean amplitude 0.375."""
    t = np.arange(rate) / rate
    x = np.stack([0.5 * np.sin(2 * np.pi * 1000 * t), 0.25 * np.sin(2 * np.pi * 1000 * t)], axis=1)
    data = _sf_file(x, rate, fmt, subtype)
    assert sniff_format(data) == {"OGG": "Ogg", "MP3": "MP3"}[fmt]
    y, got_rate = read_audio(data)
    assert got_rate == rate and y.shape == (rate, 2) and y.dtype == np.float32
    inner = slice(2000, -2000)  # away from the codecs' first and last frames
    for c, amplitude in ((0, 0.5), (1, 0.25)):
        freq, _ = _spectrum_peak(y[inner, c], rate)
        assert abs(freq - 1000) <= rate / len(y[inner])
        assert np.sqrt(2 * np.mean(y[inner, c] ** 2)) == pytest.approx(amplitude, rel=0.03)
    assert np.abs(y[inner] - x[inner]).max() < 0.05
    mono = load_audio(data, 16000)
    assert mono.shape == (16000,)
    freq, _ = _spectrum_peak(mono[1000:-1000], 16000)
    assert abs(freq - 1000) <= 16000 / len(mono[1000:-1000])
    assert np.sqrt(2 * np.mean(mono[1000:-1000] ** 2)) == pytest.approx(0.375, rel=0.03)


def test_truncated_and_corrupt_flac_and_mp3_are_clear_errors():
    x = _tone(440, 16000, seconds=0.5)
    flac = _sf_file(x, 16000, "FLAC", "PCM_16")
    corrupt = bytearray(flac)
    corrupt[len(flac) // 3:len(flac) // 3 + 200] = bytes(200)
    cases = [(flac[:len(flac) // 2], "FLAC: libsndfile could not decode"), (flac[:60], "FLAC"),
             (bytes(corrupt), "FLAC: libsndfile could not decode"),
             (b"fLaC" + bytes(60), "FLAC: libsndfile could not decode")]
    mp3 = _sf_file(x, 16000, "MP3", "MPEG_LAYER_III")  # the wheels' libsndfile (>= 1.1) writes MP3 with LAME
    assert read_audio(mp3)[0].shape == (8000, 1)
    cases += [(mp3[:len(mp3) // 2], r"MP3: truncated or corrupt: \d+ frames decode of the 8000"),
              (b"ID3\x03" + bytes(100), "MP3: libsndfile could not decode"),
              (mp3[:4] + bytes(len(mp3) - 4), "MP3")]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            read_audio(data)
        with pytest.raises(ValueError, match=message):
            load_audio(data, 16000)


def test_a_header_declaring_hours_is_refused_before_decoding():
    """A FLAC header may declare 2**36 - 1 samples in 34 bytes, an MP3's Xing header 2**32 - 1 frames of 1152:
    refused from the header, nothing allocated for them; ``max_samples`` bounds what a real file decodes to; a
    header that leaves the length open is refused too."""
    import tracemalloc
    flac = _sf_file(_tone(440, 16000, seconds=0.5), 16000, "FLAC", "PCM_16")
    mp3 = _sf_file(_tone(440, 16000, seconds=0.5), 16000, "MP3", "MPEG_LAYER_III")
    xing = mp3.index(b"Xing") if b"Xing" in mp3 else mp3.index(b"Info")  # then flags, frame count (big-endian)
    assert struct.unpack(">I", mp3[xing + 4:xing + 8])[0] & 1  # the frame count is there
    hostile_mp3 = mp3[:xing + 8] + struct.pack(">I", 0xFFFFFFFF) + mp3[xing + 12:]
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"declares 68719476735 frames of 1 channel \(4294967.3 s at 16000 Hz\)"):
            read_audio(_flac_total_samples(flac, 2 ** 36 - 1))
        with pytest.raises(ValueError, match=r"MP3: the header declares \d{13} frames of 1 channel"):
            read_audio(hostile_mp3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with pytest.raises(ValueError, match="more than the 7999 samples"):
        read_audio(flac, max_samples=7999)
    assert read_audio(flac, max_samples=8000)[0].shape == (8000, 1)
    with pytest.raises(ValueError, match="does not say how many frames"):
        read_audio(_flac_total_samples(flac, 0))
    with pytest.raises(ValueError, match="max_samples"):
        read_audio(flac, max_samples=0)


def test_damaged_files_decode_or_are_value_errors():
    """Bytes overwritten, cut or garbled anywhere in FLAC, Ogg Vorbis/Opus, MP3 and AIFF files: each decodes (to
    at most ``max_samples``) or is a ValueError; nothing else escapes libsndfile."""
    x = np.stack([_tone(440, 16000, seconds=0.25)] * 2, axis=1)
    files = [_sf_file(x, 16000, fmt, subtype) for fmt, subtype in (("FLAC", "PCM_16"), ("OGG", "VORBIS"),
                                                                   ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III"),
                                                                   ("AIFF", "PCM_16"))]
    rng = np.random.default_rng(0)
    outcomes = set()
    for i in range(300):
        d = bytearray(files[i % len(files)])
        mode = i // len(files) % 3
        if mode == 0:  # bytes overwritten anywhere
            for _ in range(rng.integers(1, 20)):
                d[rng.integers(len(d))] = rng.integers(256)
        elif mode == 1:  # cut
            d = d[:rng.integers(4, len(d))]
        else:  # the headers garbled
            for _ in range(rng.integers(1, 8)):
                d[rng.integers(min(len(d), 200))] = rng.integers(256)
        try:
            y, rate = read_audio(bytes(d), max_samples=1 << 20)
        except ValueError:
            outcomes.add("error")
            continue
        outcomes.add("decoded")
        assert y.dtype == np.float32 and y.ndim == 2 and y.shape[0] * y.shape[1] <= 1 << 20
    assert outcomes == {"error", "decoded"}


def test_formats_without_a_decoder_and_without_soundfile(monkeypatch):
    """WebM and MP4 are refused by name; FLAC, MP3 and Ogg without soundfile (its import fails, as when it is not
    installed) are refused by name with the extra that brings it, and WAV still decodes."""
    mp4 = b"\x00\x00\x00\x20ftypM4A " + bytes(40)
    for data, name in ((mp4, "MP4/M4A"), (b"\x1a\x45\xdf\xa3" + bytes(40), "WebM/Matroska")):
        with pytest.raises(UnsupportedAudioFormat, match=f"{name}, which is not decoded; accepted: WAV"):
            read_audio(data)
    with pytest.raises(UnsupportedAudioFormat, match="not audio that is recognised"):
        read_audio(b"hello world, not audio")
    flac = _sf_file(_tone(440, 16000, seconds=0.1), 16000, "FLAC", "PCM_16")
    monkeypatch.setitem(sys.modules, "soundfile", None)  # `import soundfile` raises ImportError
    for data, name in ((flac, "FLAC"), (b"ID3\x03" + bytes(100), "MP3"), (b"OggS" + bytes(60), "Ogg")):
        with pytest.raises(UnsupportedAudioFormat, match=f"{name}, decoded with the soundfile package") as e:
            load_audio(data)
        assert 'pip install "forgegrad[audio]"' in str(e.value)
    ints = np.arange(-50, 50).reshape(100, 1)
    np.testing.assert_array_equal(read_audio(_wave_module(ints, 16000, 2))[0], ints / 32768)
