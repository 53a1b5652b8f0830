"""Whisper's log-mel features (transformers' ``WhisperFeatureExtractor``) in numpy.

Audio at 16 kHz, padded with silence (or cut) to the checkpoint's window (``chunk_length`` seconds, 30 for
Whisper), framed by a periodic Hann window of ``n_fft`` samples every ``hop_length`` (the signal reflected at
both ends, as ``torch.stft(center=True)``), the power spectrum through Slaney's mel filter bank, then
``log10`` clamped at 1e-10, floored at the largest value less 8, and mapped by ``(x + 4) / 4``; the last frame
dropped. Frames are cut with a strided view and transformed in one ``rfft`` (float64, rounded to complex64 as
transformers' numpy path does), so 30 s of audio takes milliseconds.
"""
from __future__ import annotations

import json
import numbers
import os
from typing import Dict, Optional, Sequence, Union

import numpy as np

__all__ = ["WhisperFeatureExtractor", "mel_filter_bank"]


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz, logarithmic above."""
    freq = np.asarray(freq, np.float64)
    mels = 3.0 * freq / 200.0
    log = freq >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(freq, 1e-300) / 1000.0) * (27.0 / np.log(6.4)), mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, np.float64)
    freq = 200.0 * mels / 3.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0)), freq)


def mel_filter_bank(num_frequency_bins: int, num_mel_filters: int, sampling_rate: int, min_frequency: float = 0.0,
                    max_frequency: float = 8000.0) -> np.ndarray:
    """(num_frequency_bins, num_mel_filters) triangular filters, centres evenly spaced on Slaney's mel scale,
    each divided by its band's width (Slaney's area normalization): transformers' ``mel_filter_bank(...,
    norm="slaney", mel_scale="slaney")`` (librosa's ``filters.mel``)."""
    mel_freqs = np.linspace(_hz_to_mel(min_frequency), _hz_to_mel(max_frequency), num_mel_filters + 2)
    filter_freqs = _mel_to_hz(mel_freqs)
    fft_freqs = np.linspace(0, sampling_rate // 2, num_frequency_bins)
    diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down, up = -slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (filter_freqs[2:num_mel_filters + 2] - filter_freqs[:num_mel_filters]))[None, :]


def _positive(config: dict, key: str, default):
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"WhisperFeatureExtractor: {key} must be a positive int, got {value!r}")
    return int(value)


class WhisperFeatureExtractor:
    """``extractor(audio, sampling_rate=16000)`` -> ``{"input_features": (B, feature_size, frames) float32}``,
    as transformers' extractor computes them (to ~1e-5). ``from_pretrained(DIR)`` reads the checkpoint's
    preprocessor_config.json."""

    def __init__(self, feature_size: int = 80, sampling_rate: int = 16000, hop_length: int = 160,
                 chunk_length: int = 30, n_fft: int = 400, padding_value: float = 0.0):
        cfg = dict(feature_size=feature_size, sampling_rate=sampling_rate, hop_length=hop_length,
                   chunk_length=chunk_length, n_fft=n_fft)
        for key, value in cfg.items():
            setattr(self, key, _positive(cfg, key, value))
        if self.n_fft < 2:
            raise ValueError(f"WhisperFeatureExtractor: n_fft must be >= 2, got {n_fft!r}")
        if not isinstance(padding_value, numbers.Real) or isinstance(padding_value, bool):
            raise ValueError(f"WhisperFeatureExtractor: padding_value must be a number, got {padding_value!r}")
        self.padding_value = float(padding_value)
        self.n_samples = self.chunk_length * self.sampling_rate
        self.nb_max_frames = self.n_samples // self.hop_length
        self.mel_filters = mel_filter_bank(1 + self.n_fft // 2, self.feature_size, self.sampling_rate)
        n = self.n_fft + 1  # periodic Hann window: numpy's symmetric window of n_fft + 1, its last point dropped
        self.window = np.hanning(n)[:-1]

    @classmethod
    def from_pretrained(cls, path) -> "WhisperFeatureExtractor":
        file = os.path.join(os.fspath(path), "preprocessor_config.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"WhisperFeatureExtractor.from_pretrained: no preprocessor_config.json in "
                                    f"{os.fspath(path)!r}")
        with open(file, encoding="utf-8") as f:
            cfg = json.load(f)
        if not isinstance(cfg, dict):
            raise ValueError(f"WhisperFeatureExtractor.from_pretrained: {file!r} must hold a JSON object")
        kind = cfg.get("feature_extractor_type", "WhisperFeatureExtractor")
        if kind != "WhisperFeatureExtractor":
            raise ValueError(f"WhisperFeatureExtractor.from_pretrained: {file!r} describes a {kind!r}")
        keys = ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft", "padding_value")
        if cfg.get("dither", 0.0):
            raise ValueError("WhisperFeatureExtractor.from_pretrained: dither is not supported (features would be "
                             "random); the Whisper checkpoints use 0.0")
        return cls(**{k: cfg[k] for k in keys if k in cfg})

    def _audio(self, raw) -> list:
        """The batch as a list of 1-D float32 arrays."""
        if isinstance(raw, np.ndarray) and raw.ndim == 2:
            items = list(raw)
        elif isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], (np.ndarray, list, tuple)):
            items = list(raw)
        else:
            items = [raw]
        out = []
        for i, a in enumerate(items):
            a = np.asarray(a)
            if a.dtype.kind not in "fiu" or a.ndim != 1 or a.size == 0:
                raise ValueError(f"WhisperFeatureExtractor: audio {i} must be a non-empty 1-D array of samples "
                                 f"(mono), got {a.dtype} of shape {a.shape}")
            a = a.astype(np.float32)
            if not np.isfinite(a).all():
                raise ValueError(f"WhisperFeatureExtractor: audio {i} holds NaN or infinite samples")
            out.append(a)
        return out

    def log_mel(self, waveform: np.ndarray) -> np.ndarray:
        """(feature_size, len // hop_length) features of one padded waveform."""
        half = self.n_fft // 2
        x = np.pad(waveform.astype(np.float64), (half, half), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[::self.hop_length]
        spec = np.fft.rfft(frames * self.window, axis=-1).astype(np.complex64)
        power = np.abs(spec, dtype=np.float64) ** 2
        mel = np.maximum(1e-10, self.mel_filters.T @ power.T)
        log = np.log10(mel).astype(np.float32)[:, :-1]
        log = np.maximum(log, log.max() - 8.0)
        return (log + 4.0) / 4.0

    def __call__(self, raw_speech: Union[np.ndarray, Sequence], sampling_rate: Optional[int] = None,
                 padding: str = "max_length", max_length: Optional[int] = None, truncation: bool = True,
                 do_normalize: bool = False, return_attention_mask: bool = False) -> Dict[str, np.ndarray]:
        """Features of one waveform (1-D) or a batch (2-D array or a list of 1-D arrays), each padded with
        ``padding_value`` to ``max_length`` samples (default: the window, ``chunk_length`` seconds) or, with
        ``padding="longest"``, to the longest; longer audio is cut (to ``max_length``) when ``truncation``.
        ``do_normalize``: each waveform scaled to zero mean and unit variance over its samples first.
        ``return_attention_mask``: 1 for the frames of real audio."""
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(f"WhisperFeatureExtractor: sampling_rate {sampling_rate!r} differs from the model's "
                             f"{self.sampling_rate} Hz; resample the audio first")
        if padding not in ("max_length", "longest"):
            raise ValueError(f"WhisperFeatureExtractor: padding must be 'max_length' or 'longest', got {padding!r}")
        audio = self._audio(raw_speech)
        target = self.n_samples if max_length is None else max_length
        if isinstance(target, bool) or not isinstance(target, numbers.Integral) or target <= 0:
            raise ValueError(f"WhisperFeatureExtractor: max_length must be a positive int, got {max_length!r}")
        target = int(target)
        if padding == "longest":  # to the longest waveform, which truncation cuts at max_length
            longest = max(len(a) for a in audio)
            target = min(longest, target) if truncation else longest
        if not truncation and any(len(a) > target for a in audio):
            raise ValueError(f"WhisperFeatureExtractor: audio longer than {target} samples and truncation=False")
        batch = np.full((len(audio), target), self.padding_value, np.float32)
        lengths = np.array([min(len(a), target) for a in audio])
        for i, a in enumerate(audio):
            a = a[:target]
            if do_normalize:
                a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)
            batch[i, :len(a)] = a
        features = np.stack([self.log_mel(w) for w in batch]).astype(np.float32)
        out = {"input_features": features}
        if return_attention_mask:
            mask = (np.arange(target)[None, :] < lengths[:, None]).astype(np.int32)[:, ::self.hop_length]
            out["attention_mask"] = mask[:, :-1] if target % self.hop_length else mask
        return out
