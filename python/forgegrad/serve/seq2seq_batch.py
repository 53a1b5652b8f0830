"""Continuous batching of encoder-decoders (T5, BART, Marian, mBART, M2M100 / NLLB, ProphetNet) for the completions
server: the decoder-only engine's loop (generation_batch.py: slots, joins at the next step, a freed slot per row that
ends, rebuilds only when a row does not fit) with an encoder in front. The server serves ProphetNet with it (its
main stream's relative bias is each row's query's projection: no table by distance for the paged kernel); BART's and
T5's families decode on the paged KV cache instead (paged_seq2seq.py), which this engine still runs as the
contiguous reference.

* A joining request's prompt is its encoder's input: the encoder runs once on it alone (one call, between two
  of the others' decode steps; a request's n choices of one prompt share it), and so do its decoder layers'
  cross-attention keys and values. The row then joins with the decoder's start token and no self-attention
  keys yet; its first token comes out of the next batched step, with the others'.
* The batch keeps each layer's encoder keys and values of every slot in one array (slots, heads, S, head_dim),
  each row's right-padded to the batch's longest source S, and a (slots, 1, 1, S) additive bias masking the
  padding (0 / the float32 minimum), as the lean step's ``cross_bias`` masks a padded batch's encoder padding.
  A row with a longer source widens those arrays (a copy of them; the decoder's cache stays); a rebuild
  (models/hf's lean steps' ``rebind``) sizes them to its rows' longest source again.
* The decoder's self-attention cache per slot is the decoder-only engine's: keys right-aligned behind masked
  padding. T5's relative-position bias of a right-aligned key is the same in every row (the distance to the new
  query does not depend on the padding before the row's keys); BART's position rows are each row's own.
* Each row picks its token as ``generate`` does for an encoder-decoder (row_settings.py): the checkpoint's
  processors (generation_config.json's / config.json's ``no_repeat_ngram_size``, ``min_length``,
  ``repetition_penalty``, forced first and last tokens, and the rest generate reads: models/hf/logits_processors.py,
  on the row's decoder tokens with the start token, the encoder_* ones on its source), then the request's token
  rules and penalties, then its own sampling settings and generator.

A batched row's logits equal its solo logits to float32 rounding (the products run on more rows, the softmax
sums over padded lengths, whose exponentials are exactly 0).
"""
from __future__ import annotations

from typing import List, Optional

import logging

import numpy as np

from ..autograd import no_grad
from .generation_batch import BatchEngine, Job, _Row

log = logging.getLogger("forgegrad.serve")
_NEG = np.float32(np.finfo(np.float32).min)


def seq2seq_batching_applies(model) -> bool:
    """The encoder-decoder's lean step runs its decoder (models/hf/_decode_seq2seq.py: T5's and BART's families,
    PEGASUS-X, NLLB-MoE, ProphetNet with float32, bfloat16 or int8 weight-only layers and no replaced or hooked
    modules)."""
    from ..models.hf._decode_seq2seq import lean_seq2seq_step
    with no_grad():
        return lean_seq2seq_step(model, [], None, None) is not None


class _Seq2SeqRow(_Row):
    def __init__(self, job: Job, index: int, stream, rng, cross, source: int, start: int):
        super().__init__(job, index, stream, rng, None, 0, start)
        # (per layer (keys, values) arrays, row) holding its encoder keys/values in the first ``source`` columns:
        # its own encoder's until it joins, then the batch's
        self.cross, self.source = cross, source
        self.start = start


class Seq2SeqBatchEngine(BatchEngine):
    """BatchEngine for an encoder-decoder: ``submit(job)`` (its prompts are the encoder's inputs); ``close()``."""

    def __init__(self, gen, max_batch: int, **kw):
        # set before the loop's thread starts (in BatchEngine.__init__)
        self.cross: Optional[list] = None  # per layer (keys, values): (slots, H, width, D)
        self.cross_bias: Optional[np.ndarray] = None  # (slots, 1, 1, width): 0 on a row's source, _NEG after it
        self.width = 0
        self.start = int(gen.model.decoder_start_token_id)
        super().__init__(gen, max_batch, **kw)

    def _decoder_step(self):
        from ..models.hf._decode_seq2seq import lean_seq2seq_step
        with no_grad():
            step = lean_seq2seq_step(self.model, [], None, None, rows_alone=True)  # each row as if alone
        if step is None:
            raise TypeError(f"Seq2SeqBatchEngine: no lean decode step for {type(self.model).__name__}")
        return step

    def _prefill_cache(self, ids: List[int]):
        return None  # the encoder runs on the prompt; the decoder's cache is the batch's

    def _prefill_step(self) -> None:
        """The first waiting prompt through the encoder (and every decoder layer's cross keys/values): its
        choices join the batch with the decoder's start token."""
        p = self.prefills.pop(0)
        job = p.job
        if job.cancelled.is_set() or job.future.done():
            for index, stream, rng in p.choices:
                stream.cancel()
                self._finish(_Row(job, index, stream, rng, None, 0, 0))
            return
        try:
            with no_grad():
                states = self.model.encode(np.array([p.ids]), None)
                cross = [(np.ascontiguousarray(k.numpy(), np.float32), np.ascontiguousarray(v.numpy(), np.float32))
                         for k, v in self.model.cross_kv(states)]
            if self.on_prefill is not None:
                self.on_prefill()
            joined = [_Seq2SeqRow(job, index, stream, rng, (cross, 0), len(p.ids), self.start)
                      for index, stream, rng in p.choices]
        except Exception as e:
            log.exception("encoding a prompt failed")
            self._drop(job, e)
            return
        self._join(joined)

    def _decode(self, tokens: np.ndarray, positions: np.ndarray, mask: np.ndarray) -> np.ndarray:
        lean = self.lean
        bias = self.cross_bias if (self.cross_bias != 0).any() else None  # no padding: no bias to add
        lean.rebind(self.cache, self.cross, bias)
        return lean(tokens, positions, mask)

    # ---- membership: the encoder keys/values travel with the decoder's cache -------------------------------------
    def _join(self, joined: List[_Row]) -> None:
        longest = max(r.source for r in joined)
        if self.cache is not None and longest > self.width:
            self._widen(longest)
        super()._join(joined)

    def _widen(self, width: int) -> None:
        """The batch's encoder arrays with ``width`` columns, the rows' keys/values kept (the new columns masked)."""
        old = self.cross
        self.cross = [tuple(self._grown(a, width) for a in kv) for kv in old]
        bias = np.full(self.cross_bias.shape[:3] + (width,), _NEG, np.float32)
        bias[..., :self.width] = self.cross_bias
        self.cross_bias, self.width = bias, width
        for row in self.rows:
            row.cross = (self.cross, row.cross[1])

    @staticmethod
    def _grown(a: np.ndarray, width: int) -> np.ndarray:
        out = np.zeros(a.shape[:2] + (width,) + a.shape[3:], np.float32)
        out[:, :, :a.shape[2]] = a
        return out

    def _place(self, row: _Seq2SeqRow, cache, b: int, length: int) -> None:
        """The row's decoder keys (the engine's placement) and its encoder keys/values into slot b."""
        if row.n:
            BatchEngine._place(row, cache, b, length)
        row.cache = (cache, b)
        src, sb = row.cross
        S = row.source
        for (k, v), (sk, sv) in zip(self.cross, src):
            k[b, :, :S], v[b, :, :S] = sk[sb, :, :S], sv[sb, :, :S]
            k[b, :, S:], v[b, :, S:] = 0, 0
        self.cross_bias[b, :, :, :S], self.cross_bias[b, :, :, S:] = 0, _NEG
        row.cross = (self.cross, b)

    def _rebuild(self, rows: List[_Row]) -> None:
        if rows:  # new arrays, sized to these rows' longest source; the rows still read from the old ones
            self.width = max(r.source for r in rows)
            src = rows[0].cross[0]  # per layer (keys, values) (rows, H, S, D)
            shape = (len(rows), src[0][0].shape[1], self.width, src[0][0].shape[3])
            self.cross = [(np.zeros(shape, np.float32), np.zeros(shape, np.float32)) for _ in src]
            self.cross_bias = np.zeros((len(rows), 1, 1, self.width), np.float32)
        else:
            self.cross, self.cross_bias, self.width = None, None, 0
        super()._rebuild(rows)

    def _fail(self, error: Exception, drain: bool = False) -> None:
        self.cross, self.cross_bias, self.width = None, None, 0
        super()._fail(error, drain)
