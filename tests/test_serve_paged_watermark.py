"""A checkpoint's watermarking_config and top_h (generation_config.json) in the paged KV engine: rows of different
lengths decoded together, preempting one another in a pool too small for all, keep each row's own green lists (each
seeded by the row's own previous tokens): the tokens of a pool with room for all, greedy rows ``generate``'s."""
from __future__ import annotations

import json
import shutil

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from test_serve_paged_kv import _jobs  # noqa: E402
from test_serve_paged_preempt import _bodies, _engine, _solo  # noqa: E402


@pytest.mark.parametrize("scheme", ["lefthash", "selfhash"])
def test_preempted_watermarked_rows_answer_as_without_preemption(tmp_path, scheme):
    from forgegrad.models import from_pretrained
    from hf_conformance import tiny_byte_gpt2
    torch.manual_seed(1)
    path = tiny_byte_gpt2(tmp_path / "gpt2", n_positions=1024)
    plain = from_pretrained(path)
    marked = tmp_path / "marked"
    shutil.copytree(path, marked)
    config = json.loads((marked / "generation_config.json").read_text())
    config.update(watermarking_config={"bias": 4.0, "seeding_scheme": scheme, "context_width": 2}, top_h=0.7)
    (marked / "generation_config.json").write_text(json.dumps(config))
    bodies = _bodies()
    cls, make = _engine(256)
    want, _, roomy = _jobs(cls, str(marked), bodies, make)
    cls, make = _engine(9)
    got, _, tight = _jobs(cls, str(marked), bodies, make)
    assert roomy.pool.preemptions == 0 and tight.pool.preemptions > 0 and tight.resumed > 0
    for a, b in zip(want, got):
        assert [c.token_ids for c in b] == [c.token_ids for c in a]
    model = from_pretrained(marked)
    changed = False
    for body, (c,) in ((b, r) for b, r in zip(bodies, got) if b["temperature"] == 0):
        ids = list(body["prompt"].encode())
        solo = _solo(model, ids, 44)
        assert c.token_ids[:len(solo)] == solo
        changed |= solo != _solo(plain, ids, 44)
    assert changed  # the watermark changed the greedy tokens
