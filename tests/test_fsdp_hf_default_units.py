"""forgegrad's Hugging Face models under a plain ``FullyShardedDataParallel(model)`` on a real 2-rank MPI job
(tests/distributed_scripts/fsdp_hf_default_units_job.py): the default units are the blocks each model declares
(``_no_split_modules``), so GPT-2's tied head and ``wpe``, Llama's tied head, T5's (and LongT5's) shared
relative-position table and T5's, BART's and ProphetNet's cross-attention projections (run outside their blocks)
compute as in the unwrapped model, under FULL_SHARD and SHARD_GRAD_OP: the same logits, and one SGD step equal to
the unwrapped model's on both ranks' mean loss."""
import json

import pytest
from test_distributed import run_job

from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def test_hf_models_with_default_units_equal_the_unwrapped_models(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    small = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0, vocab_size=40)
    hf = {"gpt2": transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2,
                                                                        n_positions=16, **small)),
          "llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(
              num_hidden_layers=2, hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
              intermediate_size=24, tie_word_embeddings=True, **small)),
          "t5": transformers.T5ForConditionalGeneration(transformers.T5Config(
              num_layers=2, d_model=16, d_kv=8, d_ff=24, num_heads=2, decoder_start_token_id=0, **small)),
          "longt5": transformers.LongT5ForConditionalGeneration(transformers.LongT5Config(
              num_layers=2, d_model=16, d_kv=8, d_ff=24, num_heads=2, decoder_start_token_id=0,
              encoder_attention_type="transient-global", local_radius=1, global_block_size=2, **small)),
          "bart": transformers.BartForConditionalGeneration(transformers.BartConfig(
              encoder_layers=2, decoder_layers=2, d_model=16, encoder_attention_heads=2, decoder_attention_heads=2,
              encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32, decoder_start_token_id=0,
              **small)),
          "pegasus_x": transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(
              encoder_layers=2, decoder_layers=2, d_model=16, encoder_attention_heads=2, decoder_attention_heads=2,
              encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32, decoder_start_token_id=0,
              block_size=4, num_global_tokens=2, **small)),
          "prophetnet": transformers.ProphetNetForConditionalGeneration(transformers.ProphetNetConfig(
              num_encoder_layers=2, num_decoder_layers=2, hidden_size=16, num_encoder_attention_heads=2,
              num_decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32,
              ngram=2, num_buckets=4, relative_max_distance=8, decoder_start_token_id=0, **small))}
    for name, model in hf.items():
        model.save_pretrained(tmp_path / name)
    run_job(2, "fsdp_hf_default_units_job.py", tmp_path, *(tmp_path / n for n in hf), timeout=120)
    ranks = json.loads((tmp_path / "result.json").read_text())["ranks"]
    assert len(ranks) == 2
    for result in ranks:
        assert set(result) == {f"{n}/{s}" for n in hf for s in ("FULL_SHARD", "SHARD_GRAD_OP")}
        for key, r in result.items():
            assert r["finite"], key
            assert r["logits"] <= 1e-6 and r["step"] <= 1e-6, (key, r)
            assert r["moved"] > 1e-4, (key, r)  # the step changed the parameters: the comparison means something
        assert result["gpt2/FULL_SHARD"]["units"] == ["GPT2LMHeadModel", "GPT2Block", "GPT2Block"]
        assert result["llama/FULL_SHARD"]["units"] == ["LlamaForCausalLM", "LlamaDecoderLayer", "LlamaDecoderLayer"]
        # T5: a unit per sublayer (its blocks are called through them), the decoder's cross-attention k and v
        # their own units (run once over the encoder's output, outside the blocks)
        t5 = result["t5/FULL_SHARD"]["units"]
        assert t5[0] == "T5ForConditionalGeneration" and t5.count("T5SubLayer") == 10 and t5.count("Linear") == 4
        # LongT5: T5's units, its encoder's block-local sublayers among them (their first's position and global
        # tables in the root: the stack reads them outside the blocks)
        longt5 = result["longt5/FULL_SHARD"]["units"]
        assert longt5.count("LongT5EncoderSubLayer") == 2 and longt5.count("T5SubLayer") == 8
        assert result["bart/FULL_SHARD"]["units"] == ["BartForConditionalGeneration"] + ["BartLayer"] * 2 + [
            "BartLayer", "Linear", "Linear"] * 2
        # PEGASUS-X: its encoder layers (the global-token table in the root: the stack reads it outside them) and
        # BART's decoder units
        assert result["pegasus_x/FULL_SHARD"]["units"] == ["PegasusXForConditionalGeneration"] + [
            "PegasusXEncoderLayer"] * 2 + ["BartLayer", "Linear", "Linear"] * 2
        # ProphetNet: its encoder and decoder layers (the streams' embeddings and the position tables in the root) and
        # the decoder's cross-attention k and v
        assert result["prophetnet/FULL_SHARD"]["units"] == ["ProphetNetForConditionalGeneration"] + [
            "ProphetNetEncoderLayer"] * 2 + ["ProphetNetDecoderLayer", "Linear", "Linear"] * 2
