"""The checks every decoder-only family runs on the two checkpoints transformers writes for it, declared once: a test
file describes its family (``DecoderFamily``: the two transformers models, its classes, which checkpoint the
single-checkpoint checks read) and ``install_family_tests(globals(), family)`` adds the module-scoped ``checkpoints``
fixture and the common tests under their usual names (so ``pytest -k`` and the node ids are unchanged):

  test_logits_and_left_padded_batches_equal_transformers      (each checkpoint)
  test_greedy_generation_equals_transformers                  (each checkpoint)
  test_beam_search_equals_transformers                        (``main``)
  test_the_cache_decode_path_equals_the_full_forward          (``main``; the prompt's first ``cache_split`` tokens)
  test_save_pretrained_is_read_back_by_transformers           (each checkpoint)
  test_onnx_export_with_past_gives_transformers_tokens        (``main``)
  test_the_lean_decode_step_and_prefill_equal_the_tensor_forward (each checkpoint; ``prefill_ids`` for windows)
  test_the_batched_and_paged_engines_and_the_server_give_generate_s_tokens (``main``)
  test_training_gradients_equal_transformers                  (each checkpoint; with ``gradients``)
  test_a_config_without_max_position_embeddings_takes_transformers_default (with ``default_max_positions``)

A family whose version of one of these differs writes its own and names it in ``leave_out``. ``edited_copy`` (a
checkpoint with another config.json) and ``check_top_level_rotary_factor`` serve the families' own tests."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import pytest

import forgegrad as fg
import hf_conformance as hfc
from forgegrad.models import from_pretrained

VOCAB = 300
# the common small config (a test file adds the family's own keys)
BASE = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, intermediate_size=64,
            max_position_embeddings=256, initializer_range=0.3, eos_token_id=None, bos_token_id=None, pad_token_id=0)


def prompts(vocab: int = VOCAB):
    """(IDS (2, 9), LEFT_PADDED (2, 10), LEFT_MASK (2, 10)): two prompts, and a batch whose first row is left-padded
    by 3 tokens."""
    ids = np.random.RandomState(1).randint(1, vocab, (2, 9))
    mask = np.ones((2, 10), np.int64)
    mask[0, :3] = 0
    return ids, np.where(mask == 1, np.random.RandomState(2).randint(1, vocab, (2, 10)), 0), mask


def edited_copy(src, dst, edit: Callable[[dict], dict]):
    """A copy at ``dst`` of the checkpoint folder ``src`` whose config.json is ``edit`` of the original. Returns dst."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(edit(cfg)))
    return dst


def check_top_level_rotary_factor(src, tmp_path, hf_class, ids, factor: float, default: float, head_dim: int = 8):
    """partial_rotary_factor ``factor`` at the config's top level (older configs), and none at all (transformers'
    default, ``default``): forgegrad rotates that part of each head and gives the logits of ``hf_class`` reading the
    same folder."""
    for f in (factor, None):
        def moved(cfg, f=f):
            cfg["rope_parameters"].pop("partial_rotary_factor")
            return cfg if f is None else {**cfg, "partial_rotary_factor": f}
        dst = edited_copy(src, tmp_path / f"old{f}", moved)
        model = from_pretrained(dst)
        assert model.rotary.head_dim == int(head_dim * (f or default))
        hfc.check_logits(model, hf_class.from_pretrained(dst).eval(), ids)


@dataclass
class DecoderFamily:
    name: str  # the model_type (and the checkpoints' temporary folder: hf_<name>)
    models: Dict[str, Callable]  # checkpoint name -> a function making the transformers model
    model_class: type  # forgegrad's class from_pretrained gives
    hf_class: type  # transformers' class (the architecture) save_pretrained's output is read back with
    ids: np.ndarray
    left_padded: np.ndarray
    left_mask: np.ndarray
    main: str = "gqa"  # the checkpoint of the checks that run on one
    tied: Optional[Sequence[str]] = None  # the checkpoints with a tied LM head (None: model.tied unchecked)
    check_loaded: Optional[Callable] = None  # check_loaded(model, name): the family's own assertions on a model
    cache_split: int = 5  # the prompt tokens that go into the cache at once before the one-token steps
    prefill_ids: Optional[np.ndarray] = None  # the lean prefill's prompt (within a sliding window)
    gradients: bool = False
    default_max_positions: Optional[int] = None  # transformers' default when the config has no such key
    leave_out: Sequence[str] = field(default_factory=tuple)


def _without_max_positions(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "max_position_embeddings"}


def install_family_tests(namespace: dict, fam: DecoderFamily) -> None:
    """Add the ``checkpoints`` fixture and the common tests (but those in ``fam.leave_out``) to ``namespace``."""
    names = list(fam.models)
    ids, left_padded, left_mask, main = fam.ids, fam.left_padded, fam.left_mask, fam.main
    each = pytest.mark.parametrize("name", names)
    tests = {}

    @pytest.fixture(scope="module")
    def checkpoints(tmp_path_factory):
        return hfc.save_checkpoints(tmp_path_factory.mktemp(f"hf_{fam.name}"), fam.models, seed=0)

    @each
    def test_logits_and_left_padded_batches_equal_transformers(checkpoints, name):
        root, hf = checkpoints
        model = from_pretrained(root / name)
        assert isinstance(model, fam.model_class)
        if fam.tied is not None:
            assert model.tied == (name in fam.tied)
        if fam.check_loaded is not None:
            fam.check_loaded(model, name)
        hfc.check_logits(model, hf[name], ids)
        hfc.check_left_padded_logits(model, hf[name], left_padded, left_mask, mask_only=True)

    @each
    def test_greedy_generation_equals_transformers(checkpoints, name):
        root, hf = checkpoints
        model = from_pretrained(root / name)
        hfc.check_greedy_generation(model, hf[name], ids, left_padded, left_mask, new_tokens=30, padded_new_tokens=15,
                                    frozen_new_tokens=None)

    def test_beam_search_equals_transformers(checkpoints):
        root, hf = checkpoints
        hfc.check_beam_search(from_pretrained(root / main), hf[main], left_padded, left_mask)

    def test_the_cache_decode_path_equals_the_full_forward(checkpoints):
        """A prompt into the cache, then one token at a time: each step's logits are the full forward's last row; and
        greedy generate is argmax decoding by hand with full forwards."""
        root, _ = checkpoints
        model = from_pretrained(root / main)
        full = model(ids).numpy()
        cache = model.new_cache(2, ids.shape[1])
        k = fam.cache_split
        with fg.no_grad():
            first = model(ids[:, :k], cache=cache).numpy()
            steps = [model(ids[:, t:t + 1], cache=cache).numpy()[:, 0] for t in range(k, ids.shape[1])]
        np.testing.assert_allclose(first, full[:, :k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.stack(steps, 1), full[:, k:], rtol=1e-5, atol=1e-5)
        hfc.check_greedy_by_hand(model, ids, 6)

    @each
    def test_save_pretrained_is_read_back_by_transformers(checkpoints, tmp_path, name):
        root, hf = checkpoints
        model = from_pretrained(root / name)
        hfc.check_save_pretrained_round_trip(model, hf[name], fam.hf_class, tmp_path / "out", ids,
                                             architecture=fam.hf_class.__name__, model_type=fam.name)

    def test_onnx_export_with_past_gives_transformers_tokens(checkpoints, tmp_path):
        pytest.importorskip("onnxruntime")
        root, hf = checkpoints
        hfc.check_decoder_export_with_past(from_pretrained(root / main), hf[main], tmp_path / "decoder.onnx",
                                           left_padded, left_mask)

    @each
    def test_the_lean_decode_step_and_prefill_equal_the_tensor_forward(checkpoints, name):
        root, _ = checkpoints
        hfc.check_lean_step_and_prefill(from_pretrained(root / name), ids, prefill_ids=fam.prefill_ids)

    def test_the_batched_and_paged_engines_and_the_server_give_generate_s_tokens(checkpoints):
        """Prompts of different lengths decoded together by the contiguous engine (padding masked in the lean step)
        and by the paged engine (block tables), and concurrent requests to the completions server (the paged engine):
        the tokens of generate, one prompt at a time."""
        root, _ = checkpoints
        hfc.check_batched_engines(str(root / main), server=True)

    tests["checkpoints"] = checkpoints
    tests.update((f.__name__, f) for f in (
        test_logits_and_left_padded_batches_equal_transformers, test_greedy_generation_equals_transformers,
        test_beam_search_equals_transformers, test_the_cache_decode_path_equals_the_full_forward,
        test_save_pretrained_is_read_back_by_transformers, test_onnx_export_with_past_gives_transformers_tokens,
        test_the_lean_decode_step_and_prefill_equal_the_tensor_forward,
        test_the_batched_and_paged_engines_and_the_server_give_generate_s_tokens))

    if fam.gradients:
        @each
        def test_training_gradients_equal_transformers(checkpoints, name):
            root, hf = checkpoints
            hfc.check_decoder_gradients(from_pretrained(root / name), hf[name], ids)
        tests[test_training_gradients_equal_transformers.__name__] = test_training_gradients_equal_transformers

    if fam.default_max_positions is not None:
        def test_a_config_without_max_position_embeddings_takes_transformers_default(checkpoints, tmp_path):
            root, hf = checkpoints
            name = names[0]
            model = from_pretrained(edited_copy(root / name, tmp_path / name, _without_max_positions))
            assert model.max_positions == fam.default_max_positions
            hfc.check_logits(model, hf[name], ids)
        tests[test_a_config_without_max_position_embeddings_takes_transformers_default.__name__] = \
            test_a_config_without_max_position_embeddings_takes_transformers_default

    unknown = set(fam.leave_out) - set(tests)
    if unknown:
        raise ValueError(f"install_family_tests: leave_out names no common test: {sorted(unknown)}")
    for key, fn in tests.items():
        if key not in fam.leave_out:
            namespace[key] = fn
