"""Audio files to the samples a speech model reads, in numpy: WAV decoding (FLAC, MP3, Ogg through soundfile) and
band-limited resampling.

    samples, rate = read_wav(data)               # (frames, channels) float32 in [-1, 1], the file's rate
    samples, rate = read_audio(data)             # the same for WAV, FLAC, MP3, Ogg, AIFF (soundfile for those)
    mono = load_audio(data, sampling_rate=16000) # 1-D float32: channels averaged, resampled to 16 kHz
    y = resample(x, 44100, 16000)                # scipy.signal.resample_poly's filter, along the last axis

``read_wav`` takes RIFF/WAVE files of integer PCM (8-bit unsigned, 16/24/32-bit signed), IEEE float (32/64-bit),
G.711 mu-law and A-law, each plain or as WAVE_FORMAT_EXTENSIBLE, any number of channels. Every size the header
declares is checked against the bytes actually there before anything is allocated, so a truncated or hostile
header is a ValueError naming what is wrong, never a crash or an allocation larger than the file.

``read_audio`` (and so ``load_audio``) also decodes FLAC, MP3, Ogg (Vorbis, Opus, FLAC) and AIFF through the
optional soundfile package (``pip install "forgegrad[audio]"``: its wheels bundle libsndfile with MP3). The
format is recognised by its first bytes before libsndfile sees anything, so other bytes never reach it; the frames
and channels the header declares are checked against ``max_samples`` before anything is decoded (a compressed file
can declare hours in a few bytes), a file that decodes to fewer frames than it declares is refused as truncated or
corrupt, and libsndfile's errors become ValueErrors naming the format. WAV stays on the numpy decoder. Other
containers (WebM, MP4, AMR; the soundfile formats without soundfile) are refused with ``UnsupportedAudioFormat``
(a ValueError) saying which format it is and what is accepted.

``resample`` is ``scipy.signal.resample_poly(x, up, down)`` with its default filter: the rates reduced by their
gcd to up/down, a linear-phase low-pass FIR of 20 * max(up, down) + 1 taps (a sinc cut at the lower of the two
Nyquist frequencies, Kaiser window beta=5, unit gain at DC), applied polyphase: each output sample sums only the
~20 * max(up, down) / up input samples under the filter, one matrix-vector product per output phase. Tones above
the new Nyquist frequency are removed (not folded back as aliases); the edges are zero-padded, as resample_poly's
default. 30 s of 44.1 kHz stereo decode and resample in ~33 ms on one core (the features take ~10 ms more).
"""
from __future__ import annotations

import io
import numbers
import struct
from fractions import Fraction
from typing import Tuple, Union

import numpy as np

__all__ = ["read_wav", "read_audio", "resample", "load_audio", "sniff_format", "UnsupportedAudioFormat", "ACCEPTED",
           "MAX_SAMPLES"]

ACCEPTED = ("WAV (RIFF/WAVE: 8/16/24/32-bit integer PCM, 32/64-bit float, mu-law or A-law; any channels and "
            "sample rate)")
MIN_RATE, MAX_RATE = 1000, 384000  # sample rates read_wav takes (telephony's 8 kHz to studio 384 kHz, with room)
MAX_SAMPLES = 1 << 27  # read_audio: frames x channels a compressed file may decode to (512 MiB of float32; ~25
#   minutes of 44.1 kHz stereo, ~2.3 hours of 16 kHz mono); load_audio: those of any file, WAV too, and the
#   samples it resamples to. read_wav alone is bounded by the file's bytes.
MAX_PHASES = 1000  # resample: output phases (the reduced ratio's output count); 44.1 to 16 kHz needs 160

_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
# the GUID of a WAVE_FORMAT_EXTENSIBLE sub-format: its format code, then this fixed tail
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


class UnsupportedAudioFormat(ValueError):
    """The bytes are audio (or something else) in a format ``read_wav`` does not decode."""


def sniff_format(data: bytes) -> str:
    """A name for the container the first bytes announce ("WAV", "MP3", "FLAC", ...), "unknown" if none."""
    head = bytes(data[:12])
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "WAV" if head[:4] == b"RIFF" else f"WAV ({head[:4].decode()})"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    for magic, name in ((b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"\x1a\x45\xdf\xa3", "WebM/Matroska"),
                        (b"FORM", "AIFF"), (b"#!AMR", "AMR")):
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    return "unknown"


def _fmt(chunk: bytes) -> Tuple[int, int, int, int, int]:
    """(format code, channels, rate, bits per sample, block align) of a "fmt " chunk; EXTENSIBLE resolved to its
    sub-format."""
    if len(chunk) < 16:
        raise ValueError(f"WAV: the fmt chunk has {len(chunk)} bytes, fewer than the 16 it needs")
    code, channels, rate, _byte_rate, align, bits = struct.unpack("<HHIIHH", chunk[:16])
    if code == _EXTENSIBLE:
        if len(chunk) < 40:
            raise ValueError(f"WAV: a WAVE_FORMAT_EXTENSIBLE fmt chunk needs 40 bytes, this one has {len(chunk)}")
        guid = chunk[24:40]
        if guid[2:] != _GUID_TAIL:
            raise UnsupportedAudioFormat(f"WAV: WAVE_FORMAT_EXTENSIBLE with an unknown sub-format GUID "
                                         f"{guid.hex()}; accepted: {ACCEPTED}")
        code = struct.unpack("<H", guid[:2])[0]
    return code, channels, rate, bits, align


def _chunks(data: bytes):
    """(id, payload offset, payload size) of each chunk after the RIFF header; a size past the end of the file is
    cut to what is there only for the data chunk when it declares 0 or 0xFFFFFFFF (a stream whose writer could not
    go back to fill it in), else it is an error."""
    pos, end = 12, len(data)
    while pos + 8 <= end:
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        start = pos + 8
        if start + size > end:
            if cid == b"data" and size in (0, 0xFFFFFFFF):
                size = end - start
            elif cid == b"data":
                raise ValueError(f"WAV: truncated: the data chunk declares {size} bytes, the file holds {end - start}")
            else:
                raise ValueError(f"WAV: truncated: chunk {cid!r} declares {size} bytes, the file holds {end - start}")
        yield cid, start, size
        pos = start + size + (size & 1)  # chunks are padded to an even size


def read_wav(data: Union[bytes, bytearray, memoryview]) -> Tuple[np.ndarray, int]:
    """(samples (frames, channels) float32, sample rate) of a WAV file's bytes.

    Integer PCM is scaled by its full scale (16-bit: / 32768) so samples lie in [-1, 1]; float samples are kept
    as they are (NaN or infinity is an error). A trailing partial frame is dropped. Raises
    ``UnsupportedAudioFormat`` for a file that is not a RIFF/WAVE file or holds an encoding not listed in the
    module's docstring, ValueError for a malformed one."""
    data = bytes(data)
    kind = sniff_format(data)
    if kind != "WAV":
        if len(data) < 12:
            raise UnsupportedAudioFormat(f"not a WAV file: {len(data)} bytes, shorter than a RIFF header; "
                                         f"accepted: {ACCEPTED}")
        what = "an unrecognised format" if kind == "unknown" else f"{kind}"
        raise UnsupportedAudioFormat(f"the file is {what}, not a RIFF/WAVE file; accepted: {ACCEPTED}")
    fmt = None
    samples = None
    for cid, start, size in _chunks(data):
        if cid == b"fmt ":
            fmt = _fmt(data[start:start + size])
        elif cid == b"data":
            if fmt is None:
                raise ValueError("WAV: the data chunk comes before any fmt chunk")
            samples = (start, size)
            break
    if fmt is None:
        raise ValueError("WAV: no fmt chunk (the header is truncated or not a WAV header)")
    if samples is None:
        raise ValueError("WAV: no data chunk")
    code, channels, rate, bits, align = fmt
    if channels < 1:
        raise ValueError(f"WAV: the fmt chunk declares {channels} channels")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"WAV: sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE}")
    encodings = {_PCM: (8, 16, 24, 32), _FLOAT: (32, 64), _MULAW: (8,), _ALAW: (8,)}
    if code not in encodings:
        raise UnsupportedAudioFormat(f"WAV: encoding 0x{code:04x} is not decoded (compressed audio); accepted: "
                                     f"{ACCEPTED}")
    if bits not in encodings[code]:
        raise ValueError(f"WAV: {bits}-bit samples are not valid for encoding 0x{code:04x} (expected "
                         f"{' or '.join(map(str, encodings[code]))} bits)")
    width = bits // 8
    if align != channels * width:
        raise ValueError(f"WAV: block align {align} does not match {channels} channels of {width}-byte samples")
    start, size = samples
    frames = size // align
    raw = np.frombuffer(data, np.uint8, frames * align, start).reshape(frames, channels, width)
    return _decode(raw, code, bits), int(rate)


def _decode(raw: np.ndarray, code: int, bits: int) -> np.ndarray:
    """(frames, channels, bytes) little-endian samples -> (frames, channels) float32."""
    flat = np.ascontiguousarray(raw).reshape(raw.shape[0], raw.shape[1] * raw.shape[2])
    if code == _FLOAT:
        out = flat.view("<f4" if bits == 32 else "<f8").astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError("WAV: the float samples hold NaN or infinity")
        return out
    if code in (_MULAW, _ALAW):
        return (_MULAW_TABLE if code == _MULAW else _ALAW_TABLE)[flat]
    if bits == 8:  # unsigned, centred on 128
        return ((flat.astype(np.float32) - 128.0) / 128.0)
    if bits == 24:  # three bytes, sign-extended through the top of an int32
        b = raw.astype(np.int32)
        v = (b[..., 0] << 8) | (b[..., 1] << 16) | (b[..., 2] << 24)
        return (v >> 8).astype(np.float32) / np.float32(2 ** 23)
    ints = flat.view("<i2" if bits == 16 else "<i4")
    return (ints.astype(np.float64) / float(2 ** (bits - 1))).astype(np.float32)


def _g711_tables() -> Tuple[np.ndarray, np.ndarray]:
    """ITU-T G.711 expansion of every byte to a sample in [-1, 1) (the 16-bit value / 32768)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    mulaw = np.where(u & 0x80, 0x84 - t, t - 0x84)
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    mag = (a & 0x0F) << 4
    mag = np.where(seg == 0, mag + 8, (mag + 0x108) << np.maximum(seg - 1, 0))
    alaw = np.where(a & 0x80, mag, -mag)
    return (mulaw / 32768.0).astype(np.float32), (alaw / 32768.0).astype(np.float32)


_MULAW_TABLE, _ALAW_TABLE = _g711_tables()

_phases: dict = {}  # (up, down) -> the polyphase filter table, for the few rate pairs a server meets


def _polyphase(up: int, down: int) -> Tuple[np.ndarray, np.ndarray]:
    """resample_poly's default filter h (2 * half + 1 taps centred at half, times ``up``) split by output phase:
    (first input index (up,), taps (up, T)). Output m = r + q * up (phase r) sits at m * down on the upsampled
    grid and sums x[j] * h[half + m * down - j * up] over the j whose tap lies inside h; moving q by one moves
    j by ``down`` and keeps the taps, so output m is ``x[first[r] + q * down : ... + T] @ taps[r]``."""
    table = _phases.get((up, down))
    if table is None:
        max_rate = max(up, down)
        half = 10 * max_rate
        n = np.arange(-half, half + 1, dtype=np.float64)
        cutoff = 1.0 / max_rate  # relative to the Nyquist frequency of the upsampled signal
        h = np.sinc(cutoff * n) * cutoff * np.kaiser(2 * half + 1, 5.0)
        h = np.append(h * (up / h.sum()), 0.0)  # index 2 * half + 1: a zero for taps outside the filter
        T = 2 * half // up + 1
        r = np.arange(up, dtype=np.int64)
        first = -((half - r * down) // up)  # ceil((r * down - half) / up)
        k = half + r[:, None] * down - (first[:, None] + np.arange(T)) * up
        taps = h[np.where((k >= 0) & (k <= 2 * half), k, 2 * half + 1)]
        table = (first, taps)
        if taps.size <= 1 << 20:
            if len(_phases) >= 16:
                _phases.clear()
            _phases[(up, down)] = table
    return table


def resample(x: np.ndarray, orig_freq: int, new_freq: int) -> np.ndarray:
    """``x`` (..., samples) resampled from ``orig_freq`` to ``new_freq`` Hz along the last axis: scipy's
    ``resample_poly(x, new // g, orig // g, axis=-1)`` (g their gcd) to float rounding, in float32 (float64 for
    float64 input). ``ceil(samples * new / orig)`` samples come out. Each output phase is one matrix-vector
    product over a strided view of the input (no copy of it per tap). A pair of rates whose reduced ratio needs more
    than ``MAX_PHASES`` output phases (44101 to 16000 Hz: 16000) is resampled at the nearest ratio that needs at
    most that many (its input samples per output within ~1e-6 of the exact ratio's): the exact filter would
    have millions of taps."""
    for name, v in (("orig_freq", orig_freq), ("new_freq", new_freq)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"resample: {name} must be a positive int, got {v!r}")
    x = np.asarray(x)
    if x.dtype.kind not in "fiu" or x.ndim == 0:
        raise ValueError(f"resample: x must be an array of real samples (..., samples), got {x.dtype} {x.shape}")
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    g = np.gcd(int(orig_freq), int(new_freq))
    up, down = int(new_freq) // g, int(orig_freq) // g
    if up == down:
        return x.astype(dtype, copy=True)
    lead, n_in = x.shape[:-1], x.shape[-1]
    rows = x.reshape(int(np.prod(lead)), n_in).astype(np.float64)
    n_out = -(-n_in * up // down)
    if max(up, down) > MAX_PHASES:  # an odd rate (44101 Hz): the nearest ratio of at most MAX_PHASES phases
        ratio = Fraction(down, up).limit_denominator(MAX_PHASES)
        down, up = ratio.numerator, ratio.denominator
    first, taps = _polyphase(up, down)
    T = taps.shape[1]
    # inputs before 0 and past the end are zeros (resample_poly's constant padding); `first` can be as low as -T
    pad = T + 1
    padded = np.zeros((rows.shape[0], n_in + 2 * pad + T), np.float64)
    padded[:, pad:pad + n_in] = rows
    windows = np.lib.stride_tricks.sliding_window_view(padded, T, axis=-1)  # (rows, positions, T): a view
    out = np.empty((rows.shape[0], n_out), np.float64)
    for r in range(min(up, n_out)):
        q = len(range(r, n_out, up))
        start = int(first[r]) + pad
        out[:, r::up] = windows[:, start:start + (q - 1) * down + 1:down] @ taps[r]
    return out.reshape(lead + (n_out,)).astype(dtype)


# sniff_format's name -> the major formats libsndfile may report for it (it detects the format itself, from the
# same bytes; a mismatch means the file is something else behind a misleading start)
_SOUNDFILE = {"FLAC": ("FLAC",), "MP3": ("MP3",), "Ogg": ("OGG",), "AIFF": ("AIFF",), "WAV (RIFX)": ("WAV",),
              "WAV (RF64)": ("RF64",)}
_SF_COUNT_MAX = 2 ** 63 - 1  # libsndfile's frame count for a file whose header does not say its length
_MP3_SLACK = 1152  # MP3 frame counts without a Xing/LAME header are estimates: one frame's samples (and 1%) of slack


class _Memory(io.BytesIO):
    """The file's bytes for libsndfile's virtual IO. A seek before the start (a damaged header's offset) lands on the
    start instead of raising inside soundfile's C callback, where the error would be printed and dropped (and the
    callback answer 0, the start, all the same)."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: self.getbuffer().nbytes}[whence]
        return super().seek(max(base + offset, 0), io.SEEK_SET)


def _soundfile():
    """The soundfile module, or None when it (or the libsndfile it loads) is not installed."""
    try:
        import soundfile
    except (ImportError, OSError):
        return None
    return soundfile


def _accepted(have_soundfile: bool) -> str:
    more = "FLAC, MP3, Ogg (Vorbis, Opus, FLAC), AIFF, RF64 and big-endian RIFX WAV"
    if have_soundfile:
        return f"{ACCEPTED}; {more} (through soundfile)"
    return f'{ACCEPTED}; {more} with the soundfile package: pip install "forgegrad[audio]"'


def _read_soundfile(sf, data: bytes, kind: str, max_samples: int) -> Tuple[np.ndarray, int]:
    """(samples (frames, channels) float32, rate) of a ``kind`` file (a key of _SOUNDFILE), decoded by libsndfile
    from memory after its declared size is checked; every libsndfile error a ValueError naming ``kind``."""
    try:
        with sf.SoundFile(_Memory(data)) as f:
            if f.format not in _SOUNDFILE[kind]:
                raise ValueError(f"{kind}: the file starts as {kind} but libsndfile reads it as {f.format}")
            frames, channels, rate = int(f.frames), int(f.channels), int(f.samplerate)
            if not MIN_RATE <= rate <= MAX_RATE:
                raise ValueError(f"{kind}: sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE}")
            if frames == _SF_COUNT_MAX or frames < 0:
                raise ValueError(f"{kind}: the header does not say how many frames the file holds (written to a pipe "
                                 "without going back to fill it in); re-encode it to a file or send WAV")
            if channels < 1 or frames * channels > max_samples:
                raise ValueError(f"{kind}: the header declares {frames} frames of {channels} "
                                 f"channel{'s' * (channels != 1)} ({frames / rate:.1f} s at {rate} Hz), more than the "
                                 f"{max_samples} samples "
                                 "(frames x channels) decoded at most")
            samples = f.read(frames, dtype="float32", always_2d=True)
    except sf.SoundFileError as e:  # LibsndfileError (a RuntimeError) carries libsndfile's message
        why = getattr(e, "error_string", None) or str(e)
        raise ValueError(f"{kind}: libsndfile could not decode the file, which is corrupt, cut short or not "
                         f"{kind} ({why})") from None
    except RuntimeError as e:
        raise ValueError(f"{kind}: libsndfile could not decode the file ({e})") from None
    slack = _MP3_SLACK + frames // 100 if kind == "MP3" else 0
    if samples.shape[0] < frames - slack:
        raise ValueError(f"{kind}: truncated or corrupt: {samples.shape[0]} frames decode of the {frames} the header "
                         "declares")
    return samples, rate


def read_audio(data: Union[bytes, bytearray, memoryview], max_samples: int = MAX_SAMPLES) -> Tuple[np.ndarray, int]:
    """(samples (frames, channels) float32, sample rate) of an audio file's bytes: WAV by ``read_wav``; FLAC, MP3,
    Ogg (Vorbis, Opus, FLAC), AIFF, RF64 and RIFX by libsndfile through soundfile when it is installed.

    libsndfile's samples are in [-1, 1] as ``read_wav``'s (integer PCM over its full scale: a 16-bit FLAC gives
    exactly the WAV file's samples). A compressed file may declare at most ``max_samples`` frames x channels,
    checked before it is decoded. Raises ``UnsupportedAudioFormat`` for a format not decoded (or one that needs
    soundfile, when it is missing: the message names the extra), ValueError for a broken file."""
    if isinstance(max_samples, bool) or not isinstance(max_samples, numbers.Integral) or max_samples < 1:
        raise ValueError(f"read_audio: max_samples must be a positive int, got {max_samples!r}")
    data = bytes(data)
    kind = sniff_format(data)
    if kind == "WAV":
        return read_wav(data)
    sf = _soundfile() if kind in _SOUNDFILE else None
    if sf is None:
        if kind == "unknown":
            what = (f"not audio that is recognised ({len(data)} bytes)" if len(data) >= 12 else
                    f"{len(data)} bytes, too short for any audio header")
        elif kind in _SOUNDFILE:
            what = f"{kind}, decoded with the soundfile package, which is not installed"
        else:
            what = f"{kind}, which is not decoded"
        raise UnsupportedAudioFormat(f"the file is {what}; accepted: {_accepted(_soundfile() is not None)}")
    return _read_soundfile(sf, data, kind, int(max_samples))


def load_audio(data: Union[bytes, bytearray, memoryview], sampling_rate: int = 16000,
               max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """An audio file's samples (``read_audio``: WAV; FLAC, MP3, Ogg, AIFF with soundfile) as a 1-D float32 array at
    ``sampling_rate`` Hz: its channels averaged (mono), then resampled with ``resample`` when the file's rate
    differs. ``max_samples`` also bounds the file's samples (frames x channels, WAV's too) and the samples it
    resamples to, checked before resampling: a small low-rate file (1 kHz 8-bit WAV) resamples to 16 float32
    samples a byte at 16 kHz. Errors as ``read_audio``'s (ValueError past ``max_samples``)."""
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, numbers.Integral) or sampling_rate <= 0:
        raise ValueError(f"load_audio: sampling_rate must be a positive int, got {sampling_rate!r}")
    samples, rate = read_audio(data, max_samples)
    frames, channels = samples.shape
    if frames * channels > max_samples:
        raise ValueError(f"the file holds {frames} frames of {channels} channel{'s' * (channels != 1)} "
                         f"({frames / rate:.1f} s), more than the {max_samples} samples (frames x channels, "
                         "max_samples) decoded at most")
    out = -(-frames * int(sampling_rate) // rate)
    if out > max_samples:
        raise ValueError(f"the file's {frames} frames at {rate} Hz ({frames / rate:.1f} s) resample to {out} "
                         f"samples at {sampling_rate} Hz, more than the {max_samples} (max_samples) decoded at most")
    mono = samples.mean(axis=1, dtype=np.float64).astype(np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return resample(mono, rate, sampling_rate) if rate != sampling_rate else np.ascontiguousarray(mono)
