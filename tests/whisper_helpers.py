"""The tiny Whisper checkpoints (written by transformers; build_whisper for the model tests, tiny_whisper with a
word-level tokenizer.json for the audio API's and CLI's) and the generated WAV files that the audio tests share."""
from __future__ import annotations

import io
import json
import struct
import wave

import numpy as np
import pytest

# the tiny vocabulary: 100 words, Whisper's special tokens in their order, then the timestamps of a 1-second window,
# <|0.00|> to <|1.00|> (ids as tests/test_hf_whisper_timestamps.py's)
EOS, START, EN, FR, DE, TRANSLATE, TRANSCRIBE, LM, PREV, NO_SPEECH, NO_TIMESTAMPS = range(100, 111)
SPECIAL = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|de|>", "<|translate|>", "<|transcribe|>",
           "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"] + \
    [f"<|{i * 0.02:.2f}|>" for i in range(51)]
MELS, POSITIONS = 16, 24  # one 1-second window (chunk_length 1): 100 frames
WORDS = ("the a of to and in is it you that he was for on are with as his they be at one have this from or had by "
         "hot word but what some we can out other were all there when up use your how said an each she which do their "
         "time if will way about many then them write would like so these her long make thing see him two has look "
         "more day could go come did number sound no most people my over know water than call first who may down side "
         "been now find any").split()
assert len(WORDS) == 100
MAX_NEW = POSITIONS - 4  # the server's: all the room after <|startoftranscript|> <|lang|> <|task|> <|notimestamps|>

# the other layout, test_hf_whisper.py's (no timestamp tokens before <|notimestamps|>): text below 100, then
# <|endoftext|>, <|startoftranscript|>, the three languages, the two tasks, <|notimestamps|>
PLAIN_NO_TIMESTAMPS = 107


def build_whisper(path, *, vocab_size=100 + len(SPECIAL), max_target_positions=POSITIONS,
                  suppress_tokens=(1, 5, TRANSLATE, TRANSCRIBE, LM, PREV, NO_SPEECH), timestamps=True,
                  alignment_heads=None, language_rows=False, feature_extractor=True, **config):
    """A multilingual tiny Whisper written by transformers to ``path``: 16 mel bins, 2 + 2 layers 32 wide, 50
    encoder positions (one 1-second window), random weights of std 0.3 (torch seeded 0) so that its tokens depend
    on the audio, and the generation settings of the real checkpoints (lang_to_id, task_to_id,
    no_timestamps_token_id, is_multilingual), generation_config.json as the Hub's (not marked as made from
    config.json).

    ``timestamps``: the layout of tests/test_hf_whisper_timestamps.py (<|startoflm|>, <|startofprev|>,
    <|nocaptions|> before <|notimestamps|> at 110; prev_sot_token_id and max_initial_timestamp_index set), else
    test_hf_whisper.py's (<|notimestamps|> at 107). ``alignment_heads``: written to generation_config.json when
    given. ``language_rows``: <|fr|>'s and <|de|>'s embedding rows moved off <|en|>'s (see below) so that the
    language detected depends on the audio. ``feature_extractor``: save WhisperFeatureExtractor (chunk_length 1)
    too. ``config``: more WhisperConfig arguments (median_filter_width). Returns ``path``."""
    import torch
    import transformers
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=MELS, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=40,
        max_source_positions=50, max_target_positions=max_target_positions, pad_token_id=EOS, bos_token_id=EOS,
        eos_token_id=EOS, decoder_start_token_id=START, suppress_tokens=list(suppress_tokens),
        begin_suppress_tokens=[3, EOS], dropout=0.0, **config)
    hf = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() >= 2 and "embed_positions" not in name:
                p.normal_(0, 0.3)
        if language_rows:
            # FR's and DE's rows (the head is tied) are EN's plus a direction orthogonal to the decoder's mean first
            # state on 16 random inputs
            x = np.random.default_rng(99).standard_normal((16, MELS, 100)).astype(np.float32)
            states = hf.model.encoder(torch.tensor(x)).last_hidden_state
            first = hf.model.decoder(input_ids=torch.full((16, 1), START),
                                     encoder_hidden_states=states).last_hidden_state
            mean = first[:, -1].mean(0) / first[:, -1].mean(0).norm()
            table = hf.model.decoder.embed_tokens.weight
            for token in (FR, DE):
                step = torch.randn(32)
                table[token] = table[EN] + 0.3 * (step - (step @ mean) * mean)
    g = hf.generation_config
    g.lang_to_id = {"<|en|>": EN, "<|fr|>": FR, "<|de|>": DE}
    g.task_to_id = {"translate": TRANSLATE, "transcribe": TRANSCRIBE}
    g.no_timestamps_token_id = NO_TIMESTAMPS if timestamps else PLAIN_NO_TIMESTAMPS
    g.is_multilingual = True
    if timestamps:
        g.prev_sot_token_id, g.max_initial_timestamp_index = PREV, 10
    if alignment_heads is not None:
        g.alignment_heads = alignment_heads
    hf.save_pretrained(path)
    if feature_extractor:
        transformers.WhisperFeatureExtractor(feature_size=MELS, chunk_length=1).save_pretrained(path)
    file = path / "generation_config.json"
    settings = json.loads(file.read_text())
    settings.pop("_from_model_config", None)
    file.write_text(json.dumps(settings))
    return path


def tiny_whisper(path):
    """build_whisper's checkpoint (timestamp layout, 24 decoder positions) with a word-level tokenizer.json of
    WORDS and Whisper's special tokens, in the new directory ``path``: the audio API's and CLI's checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: i for i, w in enumerate(WORDS)} | {t: 100 + i for i, t in enumerate(SPECIAL)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL)
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    return build_whisper(path)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    """tiny_whisper's directory, written once per test module (imported by the modules as a fixture)."""
    return tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


@pytest.fixture(scope="module")
def reference(whisper_dir):
    """transformers' model, feature extractor and tokenizer read from whisper_dir."""
    import transformers
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(whisper_dir)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(whisper_dir / "tokenizer.json"))
    return hf, extractor, tokenizer


def signal(seconds, rate, channels, seed):
    """Tones and noise, (frames, channels) floats in [-1, 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    cols = [sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 3500) * t) for _ in range(4))
            + 0.01 * rng.standard_normal(t.shape) for _ in range(channels)]
    return np.stack(cols, axis=1)


def pcm_wav(x, rate, width):
    """(the WAV file written by the wave module, the samples it holds as floats)."""
    full = 2 ** (8 * width - 1)
    ints = np.clip(np.round(x * full), -full, full - 1).astype(np.int64)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        raw = ints.astype("<i4").view(np.uint8).reshape(ints.shape + (4,))[..., :width]
        w.writeframes(raw.tobytes())
    return buf.getvalue(), ints / full


def float_wav(x, rate):
    payload = x.astype("<f4").tobytes()
    ch = x.shape[1]
    fmt = struct.pack("<HHIIHH", 3, ch, rate, rate * 4 * ch, 4 * ch, 32)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body, x.astype(np.float32).astype(np.float64)


WAVS = {  # name -> (file, samples as stored, rate)
    "8k-stereo-int16": lambda: (*pcm_wav(signal(0.8, 8000, 2, 1), 8000, 2), 8000),
    "16k-mono-float32": lambda: (*float_wav(signal(0.9, 16000, 1, 2), 16000), 16000),
    "44k-stereo-int24": lambda: (*pcm_wav(signal(0.5, 44100, 2, 3), 44100, 3), 44100),
}


def expected_features(reference, stored, rate):
    """What the server should compute, by other hands: channels averaged, scipy's resample_poly, transformers'
    feature extractor."""
    from scipy import signal as scipy_signal
    _, extractor, _ = reference
    mono = stored.mean(axis=1)
    if rate != 16000:
        g = np.gcd(rate, 16000)
        mono = scipy_signal.resample_poly(mono, 16000 // g, rate // g)
    return extractor(mono.astype(np.float32), sampling_rate=16000, return_tensors="np")["input_features"]
