"""Extractive question answering and multiple choice on the encoders (transformers' ``*ForQuestionAnswering`` and
``*ForMultipleChoice`` of BERT, RoBERTa, XLM-RoBERTa, DistilBERT, ModernBERT and DeBERTa-v2/v3), with transformers'
parameter names, so ``from_pretrained`` reads their checkpoints and ``save_pretrained`` writes ones transformers
reads back.

One head of each kind serves every family; a family only says how its encoder's states become logits:

    question answering   ``forward(input_ids, attention_mask=None, token_type_ids=None)`` returns
                         ``QuestionAnsweringOutput(start_logits (B, T), end_logits (B, T))``, a named pair: the
                         per-token scores of the answer's first and last token (``span_logits``: (B, T, 2))
    multiple choice      ``forward(input_ids (B, C, T), attention_mask=None, token_type_ids=None)`` returns the
                         logits (B, C): each of the C (prompt, choice) rows scored by the family's one-label
                         sequence classifier (``choice_logits`` on the (B * C, T) rows)

``answer_question`` (question_answering.py) turns the start / end logits into answer spans of the context.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ... import grad_mode, nn
from ...tensor import Tensor
from ._layers import mask_array
from .bert import BertForSequenceClassification, BertModel, RobertaModel, XLMRobertaModel
from .deberta import DebertaV2ForSequenceClassification, _TaskModel
from .distilbert import DistilBertForSequenceClassification, DistilBertModel
from .modernbert import ModernBertForSequenceClassification, ModernBertModel, ModernBertPredictionHead

__all__ = ["QuestionAnsweringOutput", "BertForQuestionAnswering", "RobertaForQuestionAnswering",
           "XLMRobertaForQuestionAnswering", "DistilBertForQuestionAnswering", "ModernBertForQuestionAnswering",
           "DebertaV2ForQuestionAnswering", "BertForMultipleChoice", "RobertaForMultipleChoice",
           "XLMRobertaForMultipleChoice", "DistilBertForMultipleChoice", "ModernBertForMultipleChoice",
           "DebertaV2ForMultipleChoice"]


class QuestionAnsweringOutput(NamedTuple):
    """Each token's score as the answer's first (``start_logits``) and last (``end_logits``) token, (B, T) each;
    unpacks as a pair: ``start, end = model(ids)``."""
    start_logits: Tensor
    end_logits: Tensor


class QuestionAnswering(nn.Module):
    """What the question-answering models share: the encoder, ``span_logits`` (the family's projection of its last
    hidden states to two scores a token), split into start and end. A family sets ``encoder_name`` (the attribute,
    which is the prefix of its weights in transformers' checkpoints) and builds ``_build``'s encoder."""

    encoder_name = ""

    def _build(self, config: dict, encoder) -> None:
        self.config = dict(config)
        labels = int(self.config.get("num_labels") or len(self.config.get("id2label") or {}) or 2)
        if labels != 2:
            raise ValueError(f"{type(self).__name__}: a question-answering head scores a start and an end a token: "
                             f"config num_labels must be 2, got {labels}")
        setattr(self, self.encoder_name, encoder)

    @property
    def encoder(self):
        return getattr(self, self.encoder_name)

    def span_logits(self, hidden: Tensor) -> Tensor:
        """(B, T, hidden) -> (B, T, 2): transformers' ``qa_outputs`` of the last hidden states."""
        return self.qa_outputs(hidden)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> QuestionAnsweringOutput:
        logits = self.span_logits(self.encoder(input_ids, attention_mask, token_type_ids).last_hidden_state)
        return QuestionAnsweringOutput(logits[..., 0], logits[..., 1])

    def from_hf(self, tensors):
        return self.encoder.from_hf(tensors)

    def to_hf(self):
        return {k: t.numpy() for k, t in self.state_dict().items()}


class BertForQuestionAnswering(QuestionAnswering):
    """BERT (no pooler) + ``qa_outputs`` (hidden -> 2): transformers' ``BertForQuestionAnswering``."""

    architecture = "BertForQuestionAnswering"
    encoder_name = "bert"
    encoder_class = BertModel

    def __init__(self, config: dict):
        super().__init__()
        self._build(config, self.encoder_class(config, add_pooling_layer=False))
        self.qa_outputs = nn.Linear(self.config["hidden_size"], 2)

    def from_hf(self, tensors):
        """The weights are already under bert. / roberta.; a pooler some checkpoints carry (converted from
        TensorFlow, e.g. the whole-word-masking SQuAD readers) is dropped, as transformers ignores it."""
        pooler = f"{self.encoder_name}.pooler."
        return BertModel.from_hf({k: v for k, v in tensors.items() if not k.startswith(pooler)})


class RobertaForQuestionAnswering(BertForQuestionAnswering):
    """RoBERTa (no pooler) + ``qa_outputs``: transformers' ``RobertaForQuestionAnswering``."""

    architecture = "RobertaForQuestionAnswering"
    encoder_name = "roberta"
    encoder_class = RobertaModel


class XLMRobertaForQuestionAnswering(RobertaForQuestionAnswering):
    """XLM-RoBERTa (no pooler) + ``qa_outputs``: transformers' ``XLMRobertaForQuestionAnswering``."""

    architecture = "XLMRobertaForQuestionAnswering"
    encoder_class = XLMRobertaModel


class DistilBertForQuestionAnswering(QuestionAnswering):
    """DistilBERT + dropout (``qa_dropout``) + ``qa_outputs`` (dim -> 2): transformers'
    ``DistilBertForQuestionAnswering``."""

    architecture = "DistilBertForQuestionAnswering"
    encoder_name = "distilbert"

    def __init__(self, config: dict):
        super().__init__()
        self._build(config, DistilBertModel(config))
        self.hf_config = dict(config)
        self.dropout = nn.Dropout(self.config.get("qa_dropout", 0.1))
        self.qa_outputs = nn.Linear(self.config["dim"], 2)

    def span_logits(self, hidden: Tensor) -> Tensor:
        return self.qa_outputs(self.dropout(hidden))

    from_hf = staticmethod(DistilBertModel.from_hf)
    to_hf = DistilBertModel.to_hf


class ModernBertForQuestionAnswering(QuestionAnswering):
    """ModernBERT + its prediction head (dense, activation, norm) + dropout + ``classifier`` (hidden -> 2) on every
    token: transformers' ``ModernBertForQuestionAnswering``."""

    architecture = "ModernBertForQuestionAnswering"
    encoder_name = "model"

    def __init__(self, config: dict):
        super().__init__()
        self._build(config, ModernBertModel(config))
        self.head = ModernBertPredictionHead(self.config)
        self.drop = nn.Dropout(self.config.get("classifier_dropout", 0.0))
        self.classifier = nn.Linear(self.config["hidden_size"], 2)

    def span_logits(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.drop(self.head(hidden)))

    from_hf = staticmethod(ModernBertModel.from_hf)


class DebertaV2ForQuestionAnswering(QuestionAnswering):
    """DeBERTa-v2 / v3 + ``qa_outputs`` (hidden -> 2): transformers' ``DebertaV2ForQuestionAnswering``."""

    architecture = "DebertaV2ForQuestionAnswering"
    model_type = "deberta-v2"
    encoder_name = "deberta"

    def __init__(self, config: dict):
        super().__init__()
        _TaskModel._build(self, config)  # self.deberta, checked settings
        self._build(config, self.deberta)
        self.qa_outputs = nn.Linear(self.config["hidden_size"], 2)

    from_hf = _TaskModel.from_hf


# ---- multiple choice ------------------------------------------------------------------------------------------------

def _rows(x, who: str, name: str, shape=None):
    """A (B, C, T) input as (B * C, T) rows (a numpy array or a Tensor reshaped), checked."""
    if x is None:
        return None
    arr = x if isinstance(x, Tensor) else np.asarray(x)
    if shape is None and arr.ndim != 3:
        raise ValueError(f"{who}: {name} must have shape (batch, choices, tokens), got shape {tuple(arr.shape)}")
    if shape is not None and tuple(arr.shape) != shape:
        raise ValueError(f"{who}: {name} must have the shape of input_ids {shape}, got {tuple(arr.shape)}")
    return arr.reshape(arr.shape[0] * arr.shape[1], arr.shape[2])  # (not -1: a size-0 array has no inferred size)


class MultipleChoice(nn.Module):
    """What the multiple-choice models share: the (B, C, T) inputs run as B * C rows through the family's
    ``choice_logits`` (its one-label sequence classifier: (B * C, 1)), reshaped to the (B, C) logits. The
    checkpoint's config keeps its own labels: the head has one output whatever they say (as transformers')."""

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> Tensor:
        who = type(self).__name__
        ids = _rows(input_ids, who, "input_ids")
        B, C, T = tuple(input_ids.shape) if hasattr(input_ids, "shape") else np.asarray(input_ids).shape
        logits = self.choice_logits(ids, _rows(attention_mask, who, "attention_mask", (B, C, T)),
                                    _rows(token_type_ids, who, "token_type_ids", (B, C, T)))
        return logits.reshape(B, C)

    def score_packed(self, sequences, token_types=None):
        raise TypeError(f"{type(self).__name__} scores (batch, choices, tokens) inputs: call the model (forward)")

    @staticmethod
    def _one_label(config: dict) -> dict:
        """``config`` with one label, to build the classifier with (the model keeps the checkpoint's to save)."""
        return dict(config, num_labels=1, id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0})


class BertForMultipleChoice(MultipleChoice, BertForSequenceClassification):
    """BERT's pooled first token + dropout + ``classifier`` (hidden -> 1): transformers' ``BertForMultipleChoice``."""

    architecture = "BertForMultipleChoice"

    def __init__(self, config: dict):
        BertForSequenceClassification.__init__(self, self._one_label(config))
        self.config = self.hf_config = dict(config)

    choice_logits = BertForSequenceClassification.forward


class RobertaForMultipleChoice(MultipleChoice):
    """RoBERTa with its pooler (dense + tanh of the first token) + dropout (``hidden_dropout_prob``) + ``classifier``
    (hidden -> 1): transformers' ``RobertaForMultipleChoice`` (BERT's head, not RoBERTa's sequence classifier's)."""

    architecture = "RobertaForMultipleChoice"
    encoder_class = RobertaModel

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.roberta = self.encoder_class(self.config)
        self.dropout = nn.Dropout(self.config.get("hidden_dropout_prob", 0.1))
        self.classifier = nn.Linear(self.config["hidden_size"], 1)

    @property
    def encoder(self) -> BertModel:
        return self.roberta

    def choice_logits(self, input_ids, attention_mask, token_type_ids) -> Tensor:
        return self.classifier(self.dropout(self.roberta(input_ids, attention_mask, token_type_ids).pooler_output))

    from_hf = staticmethod(BertModel.from_hf)
    to_hf = BertModel.to_hf


class XLMRobertaForMultipleChoice(RobertaForMultipleChoice):
    """XLM-RoBERTa's (transformers' ``XLMRobertaForMultipleChoice``): RoBERTa's head."""

    architecture = "XLMRobertaForMultipleChoice"
    encoder_class = XLMRobertaModel


class DistilBertForMultipleChoice(MultipleChoice, DistilBertForSequenceClassification):
    """DistilBERT's first token + pre_classifier (ReLU) + dropout + ``classifier`` (dim -> 1): transformers'
    ``DistilBertForMultipleChoice``."""

    architecture = "DistilBertForMultipleChoice"

    def __init__(self, config: dict):
        DistilBertForSequenceClassification.__init__(self, self._one_label(config))
        self.config = self.hf_config = dict(config)

    choice_logits = DistilBertForSequenceClassification.forward


class ModernBertForMultipleChoice(MultipleChoice, ModernBertForSequenceClassification):
    """ModernBERT + its prediction head over the first real token (``classifier_pooling`` "cls": the first token
    the attention mask keeps, as transformers picks it, so left padding works too) or the mean of the real tokens
    ("mean") + dropout + ``classifier`` (hidden -> 1): transformers' ``ModernBertForMultipleChoice``."""

    architecture = "ModernBertForMultipleChoice"

    def __init__(self, config: dict):
        ModernBertForSequenceClassification.__init__(self, self._one_label(config))
        self.config = self.hf_config = dict(config)

    def choice_logits(self, input_ids, attention_mask, token_type_ids) -> Tensor:
        if isinstance(attention_mask, Tensor) and grad_mode.recorder() is not None:
            return self._graph_choice_logits(input_ids, attention_mask)  # an export: pooled with Tensor ops
        if self.pooling == "mean":
            return ModernBertForSequenceClassification.forward(self, input_ids, attention_mask)
        x = self.model(input_ids, attention_mask).last_hidden_state
        N = x.shape[0]
        real = mask_array(attention_mask, type(self).__name__, (N, x.shape[1]))
        first = np.zeros(N, np.int64) if real is None else real.argmax(-1)
        return self.classifier(self.drop(self.head(x[np.arange(N), first])))

    def _graph_choice_logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``choice_logits`` as Tensor ops on the mask (what an exported graph computes): the pooled state is the
        hidden states weighted by the real tokens ("mean") or by a one-hot of the first real one ("cls")."""
        x = self.model(input_ids, attention_mask).last_hidden_state
        keep = attention_mask.float()  # (N, T)
        if self.pooling != "mean":
            keep = keep * (keep.cumsum(-1) <= 1).float()  # the first token the mask keeps
            first = ((keep * 0 + 1).cumsum(-1) <= 1).float()  # token 0: a row with no token pools it (argmax's 0)
            keep = keep + (1 - keep.sum(-1).unsqueeze(-1)) * first
        w = keep.unsqueeze(-1)
        return self.classifier(self.drop(self.head((x * w).sum(1) / w.sum(1))))


class DebertaV2ForMultipleChoice(MultipleChoice, DebertaV2ForSequenceClassification):
    """DeBERTa + ``ContextPooler`` + dropout (``cls_dropout``) + ``classifier`` (hidden -> 1): transformers'
    ``DebertaV2ForMultipleChoice``."""

    architecture = "DebertaV2ForMultipleChoice"

    def __init__(self, config: dict):
        DebertaV2ForSequenceClassification.__init__(self, self._one_label(config))
        self.config = self.hf_config = dict(config)

    choice_logits = DebertaV2ForSequenceClassification.forward
