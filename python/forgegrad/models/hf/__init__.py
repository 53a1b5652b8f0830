"""Hugging Face checkpoints: ``from_pretrained(DIR)`` builds GPT-2, BERT or a Llama-style decoder from a
directory written by transformers' ``save_pretrained`` (``config.json`` + safetensors), and
``save_pretrained(model, DIR)`` writes one that transformers loads back.

    >>> model = forgegrad.models.from_pretrained("path/to/gpt2")
    >>> out = forgegrad.models.generate(model, ids, max_new_tokens=20)

Dual image-text encoders (zero-shot image classification, image and text embeddings): ``CLIPModel``,
``CLIPTextModel``, ``CLIPVisionModel``, ``CLIPTextModelWithProjection``, ``CLIPVisionModelWithProjection``,
``SiglipModel``, ``SiglipTextModel``, ``SiglipVisionModel`` (clip.py, siglip.py; images as ``pixel_values``),
``Siglip2Model``, ``Siglip2TextModel``, ``Siglip2VisionModel``, ``Siglip2ForImageClassification`` (siglip2.py: images
as variable-count patches with ``pixel_attention_mask`` and ``spatial_shapes``).
Vision transformers: ``ViTModel``, ``ViTForImageClassification``, ``DeiTModel``, ``DeiTForImageClassification``,
``DeiTForImageClassificationWithTeacher`` (vit.py), ``Dinov2Model``, ``Dinov2ForImageClassification``
(dinov2.py), ``Dinov2WithRegistersModel``, ``Dinov2WithRegistersForImageClassification`` (dinov2_registers.py),
``SwinModel``, ``SwinForImageClassification`` (swin.py), ``Swinv2Model``, ``Swinv2ForImageClassification``
(swinv2.py), ``BeitModel``, ``BeitForImageClassification`` (beit.py); the backbones ``Dinov2Backbone``,
``Dinov2WithRegistersBackbone``, ``SwinBackbone`` and ``Swinv2Backbone`` (backbones.py: feature maps of chosen
stages); depth estimation and dense prediction: ``DepthAnythingForDepthEstimation`` (depth_anything.py),
``DPTModel``, ``DPTForDepthEstimation``, ``DPTForSemanticSegmentation`` (dpt.py, their neck in dpt_neck.py);
``load_image_processor(DIR)`` makes their ``pixel_values``.

Supported architectures: ``GPT2LMHeadModel``, ``BertModel``, ``RobertaModel``, ``XLMRobertaModel``,
``BertForSequenceClassification``, ``RobertaForSequenceClassification``, ``XLMRobertaForSequenceClassification``,
``ModernBertModel``, ``ModernBertForSequenceClassification``, ``DistilBertModel``,
``DistilBertForSequenceClassification``, ``DebertaV2Model``, ``DebertaV2ForSequenceClassification``,
``DebertaV2ForMaskedLM``, ``DebertaV2ForTokenClassification`` (DeBERTa-v2 and v3), ``MPNetModel``,
``MPNetForSequenceClassification``, ``MPNetForMaskedLM``, ``ElectraModel``, ``ElectraForSequenceClassification``,
``ElectraForPreTraining`` (the discriminator), ``AlbertModel``, ``AlbertForSequenceClassification``, the extractive
question-answering and multiple-choice models of those encoders (``BertForQuestionAnswering``,
``BertForMultipleChoice`` and their RoBERTa, XLM-RoBERTa, DistilBERT, ModernBERT and DebertaV2 namesakes; see
``answer_question``),
``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``,
``Phi3ForCausalLM``, ``GemmaForCausalLM``, ``Gemma2ForCausalLM``, ``Gemma3ForCausalLM``,
``Gemma3ForConditionalGeneration`` (Gemma 3 with images: gemma3_vlm.py), ``LlavaForConditionalGeneration``
(LLaVA 1.5: llava.py), ``LlavaNextForConditionalGeneration`` (LLaVA-NeXT, v1.6: llava_next.py),
``PaliGemmaForConditionalGeneration`` (PaliGemma 1 and 2: paligemma.py),
``GPTNeoXForCausalLM`` (Pythia),
``Olmo2ForCausalLM``, ``Olmo3ForCausalLM``,
``PhiForCausalLM``,
``Starcoder2ForCausalLM``,
``StableLmForCausalLM``,
``GraniteForCausalLM``, and the mixture-of-experts
``MixtralForCausalLM``, ``Qwen2MoeForCausalLM``, ``Qwen3MoeForCausalLM``, and the encoder-decoders
``T5ForConditionalGeneration`` (T5, Flan-T5), ``MT5ForConditionalGeneration``, ``UMT5ForConditionalGeneration``,
``LongT5ForConditionalGeneration`` (local and transient-global encoders),
``BartForConditionalGeneration``, ``MarianMTModel``,
``MBartForConditionalGeneration``, ``M2M100ForConditionalGeneration`` (M2M100, NLLB-200),
``NllbMoeForConditionalGeneration`` (NLLB-MoE),
``PegasusForConditionalGeneration``, ``PegasusXForConditionalGeneration`` (PEGASUS-X: block-local encoder with global
tokens), ``ProphetNetForConditionalGeneration`` (main and ngram predicting streams),
``BlenderbotForConditionalGeneration``, ``BlenderbotSmallForConditionalGeneration`` and
``WhisperForConditionalGeneration`` (speech recognition;
``WhisperFeatureExtractor`` makes its features).
Weights are read with forgegrad's bounded safetensors reader; pickle files (``pytorch_model.bin``) are never
opened.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

from ...devices import device
from ._files import CheckpointError, read_config, read_weights, write_checkpoint
from ._load import BFLOAT16, materialize, weights_dtype, widen_unless_linear_weights
from .bart import (BartForConditionalGeneration, BlenderbotForConditionalGeneration,
                   BlenderbotSmallForConditionalGeneration, M2M100ForConditionalGeneration, MarianMTModel,
                   MBartForConditionalGeneration, PegasusForConditionalGeneration)
from .whisper import WhisperForConditionalGeneration
from .whisper_features import WhisperFeatureExtractor
from .bert import (BertForSequenceClassification, BertModel, RobertaForSequenceClassification, RobertaModel,
                   XLMRobertaForSequenceClassification, XLMRobertaModel)
from .generation import generate
from .gemma2 import Gemma2ForCausalLM, Gemma3ForCausalLM, GemmaForCausalLM
from .gemma3_vlm import Gemma3ForConditionalGeneration
from .llava import LlavaForConditionalGeneration
from .llava_next import LlavaNextForConditionalGeneration
from .qwen2_vl import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration
from .paligemma import PaliGemmaForConditionalGeneration
from .gpt2 import GPT2LMHeadModel
from .gpt_neox import GPTNeoXForCausalLM
from .olmo2 import Olmo2ForCausalLM
from .olmo3 import Olmo3ForCausalLM
from .phi import PhiForCausalLM
from .starcoder2 import Starcoder2ForCausalLM
from .stablelm import StableLmForCausalLM
from .granite import GraniteForCausalLM
from .llama import LlamaForCausalLM, MistralForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM
from .deberta import (DebertaV2ForMaskedLM, DebertaV2ForSequenceClassification, DebertaV2ForTokenClassification,
                      DebertaV2Model)
from .distilbert import DistilBertForSequenceClassification, DistilBertModel
from .modernbert import ModernBertForSequenceClassification, ModernBertModel
from .mpnet import MPNetForMaskedLM, MPNetForSequenceClassification, MPNetModel
from .electra import ElectraForPreTraining, ElectraForSequenceClassification, ElectraModel
from .albert import AlbertForSequenceClassification, AlbertModel
from .moe import MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM
from .onnx_export import export_with_past, generate_onnx
from .onnx_seq2seq import export_seq2seq, generate_onnx_seq2seq
from .onnx_image_text import export_image_text, generate_image_text_onnx
from .onnx_task_heads import export_task_head
from .onnx_whisper import generate_onnx_whisper
from .longt5 import LongT5ForConditionalGeneration
from .nllb_moe import NllbMoeForConditionalGeneration
from .pegasus_x import PegasusXForConditionalGeneration
from .prophetnet import ProphetNetForConditionalGeneration
from .t5 import MT5ForConditionalGeneration, T5ForConditionalGeneration, UMT5ForConditionalGeneration
from .task_heads import (BertForMultipleChoice, BertForQuestionAnswering, DebertaV2ForMultipleChoice,
                         DebertaV2ForQuestionAnswering, DistilBertForMultipleChoice, DistilBertForQuestionAnswering,
                         ModernBertForMultipleChoice, ModernBertForQuestionAnswering, QuestionAnsweringOutput,
                         RobertaForMultipleChoice, RobertaForQuestionAnswering, XLMRobertaForMultipleChoice,
                         XLMRobertaForQuestionAnswering)
from .question_answering import answer_question
from .watermarking import WatermarkDetector
from .clip import (CLIPModel, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionModel,
                   CLIPVisionModelWithProjection)
from .siglip import SiglipModel, SiglipTextModel, SiglipVisionModel
from .siglip2 import Siglip2ForImageClassification, Siglip2Model, Siglip2TextModel, Siglip2VisionModel
from .onnx_clip import export_clip_tower
from .zero_shot import ImageTextProcessor, zero_shot_image_classification
from .vit import (DeiTForImageClassification, DeiTForImageClassificationWithTeacher, DeiTModel,
                  ViTForImageClassification, ViTModel)
from .dinov2 import Dinov2ForImageClassification, Dinov2Model
from .dinov2_registers import Dinov2WithRegistersForImageClassification, Dinov2WithRegistersModel
from .swin import SwinForImageClassification, SwinModel
from .swinv2 import Swinv2ForImageClassification, Swinv2Model
from .beit import BeitForImageClassification, BeitModel
from .backbones import Dinov2Backbone, Dinov2WithRegistersBackbone, SwinBackbone, Swinv2Backbone
from .depth_anything import DepthAnythingForDepthEstimation
from .dpt import DPTForDepthEstimation, DPTForSemanticSegmentation, DPTModel
from .image_processing import load_image_processor
from .onnx_vit import export_vit

__all__ = ["from_pretrained", "save_pretrained", "generate", "export_with_past", "generate_onnx", "export_image_text",
           "generate_image_text_onnx", "export_seq2seq",
           "generate_onnx_seq2seq", "generate_onnx_whisper", "export_task_head", "CheckpointError", "WatermarkDetector",
           "ARCHITECTURES",
           "GPT2LMHeadModel", "BertModel", "RobertaModel", "XLMRobertaModel", "BertForSequenceClassification",
           "RobertaForSequenceClassification", "XLMRobertaForSequenceClassification", "ModernBertModel",
           "ModernBertForSequenceClassification", "DistilBertModel", "DistilBertForSequenceClassification",
           "DebertaV2Model", "DebertaV2ForSequenceClassification", "DebertaV2ForMaskedLM",
           "DebertaV2ForTokenClassification", "MPNetModel", "MPNetForSequenceClassification", "MPNetForMaskedLM",
           "ElectraModel", "ElectraForSequenceClassification", "ElectraForPreTraining", "AlbertModel",
           "AlbertForSequenceClassification",
           "LlamaForCausalLM", "MistralForCausalLM",
           "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM", "Gemma2ForCausalLM",
           "Gemma3ForCausalLM", "GemmaForCausalLM", "GPTNeoXForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM",
           "Gemma3ForConditionalGeneration", "LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration",
           "PaliGemmaForConditionalGeneration",
           "Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
           "PhiForCausalLM",
           "Starcoder2ForCausalLM",
           "StableLmForCausalLM",
           "GraniteForCausalLM",
           "MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM",
           "T5ForConditionalGeneration", "MT5ForConditionalGeneration", "UMT5ForConditionalGeneration",
           "LongT5ForConditionalGeneration", "NllbMoeForConditionalGeneration",
           "BartForConditionalGeneration", "MarianMTModel",
           "MBartForConditionalGeneration", "M2M100ForConditionalGeneration", "PegasusForConditionalGeneration",
           "PegasusXForConditionalGeneration", "ProphetNetForConditionalGeneration",
           "BlenderbotForConditionalGeneration",
           "BlenderbotSmallForConditionalGeneration",
           "WhisperForConditionalGeneration", "WhisperFeatureExtractor", "answer_question", "QuestionAnsweringOutput",
           "BertForQuestionAnswering", "RobertaForQuestionAnswering", "XLMRobertaForQuestionAnswering",
           "DistilBertForQuestionAnswering", "ModernBertForQuestionAnswering", "DebertaV2ForQuestionAnswering",
           "BertForMultipleChoice", "RobertaForMultipleChoice", "XLMRobertaForMultipleChoice",
           "DistilBertForMultipleChoice", "ModernBertForMultipleChoice", "DebertaV2ForMultipleChoice",
           "CLIPModel", "CLIPTextModel", "CLIPVisionModel", "CLIPTextModelWithProjection",
           "CLIPVisionModelWithProjection", "SiglipModel", "SiglipTextModel", "SiglipVisionModel",
           "Siglip2Model", "Siglip2TextModel", "Siglip2VisionModel", "Siglip2ForImageClassification",
           "export_clip_tower", "ImageTextProcessor", "zero_shot_image_classification",
           "ViTModel", "ViTForImageClassification", "DeiTModel", "DeiTForImageClassification",
           "DeiTForImageClassificationWithTeacher", "Dinov2Model", "Dinov2ForImageClassification",
           "Dinov2WithRegistersModel", "Dinov2WithRegistersForImageClassification", "SwinModel",
           "SwinForImageClassification", "BeitModel", "BeitForImageClassification",
           "Swinv2Model", "Swinv2ForImageClassification", "Swinv2Backbone",
           "Dinov2Backbone", "Dinov2WithRegistersBackbone", "SwinBackbone", "load_image_processor", "export_vit",
           "DepthAnythingForDepthEstimation", "DPTModel", "DPTForDepthEstimation", "DPTForSemanticSegmentation"]

ARCHITECTURES = {cls.architecture: cls for cls in
                 (GPT2LMHeadModel, BertModel, RobertaModel, XLMRobertaModel, BertForSequenceClassification,
                  RobertaForSequenceClassification, XLMRobertaForSequenceClassification, ModernBertModel,
                  ModernBertForSequenceClassification, DistilBertModel, DistilBertForSequenceClassification,
                  DebertaV2Model, DebertaV2ForSequenceClassification, DebertaV2ForMaskedLM,
                  DebertaV2ForTokenClassification, MPNetModel, MPNetForSequenceClassification, MPNetForMaskedLM,
                  ElectraModel, ElectraForSequenceClassification, ElectraForPreTraining, AlbertModel,
                  AlbertForSequenceClassification,
                  LlamaForCausalLM, MistralForCausalLM,
                  Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM,
                  Gemma3ForCausalLM, GemmaForCausalLM, GPTNeoXForCausalLM, Olmo2ForCausalLM,
                  Olmo3ForCausalLM, Gemma3ForConditionalGeneration, LlavaForConditionalGeneration,
                  LlavaNextForConditionalGeneration,
                  PaliGemmaForConditionalGeneration, Qwen2VLForConditionalGeneration,
                  Qwen2_5_VLForConditionalGeneration, PhiForCausalLM,
                  Starcoder2ForCausalLM,
                  StableLmForCausalLM,
                  GraniteForCausalLM,
                  MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM,
                  T5ForConditionalGeneration, MT5ForConditionalGeneration, UMT5ForConditionalGeneration,
                  LongT5ForConditionalGeneration, NllbMoeForConditionalGeneration,
                  BartForConditionalGeneration, MarianMTModel,
                  MBartForConditionalGeneration, M2M100ForConditionalGeneration, PegasusForConditionalGeneration,
                  PegasusXForConditionalGeneration, ProphetNetForConditionalGeneration,
                  BlenderbotForConditionalGeneration, BlenderbotSmallForConditionalGeneration,
                  WhisperForConditionalGeneration,
                  BertForQuestionAnswering, RobertaForQuestionAnswering, XLMRobertaForQuestionAnswering,
                  DistilBertForQuestionAnswering, ModernBertForQuestionAnswering, DebertaV2ForQuestionAnswering,
                  BertForMultipleChoice, RobertaForMultipleChoice, XLMRobertaForMultipleChoice,
                  DistilBertForMultipleChoice, ModernBertForMultipleChoice, DebertaV2ForMultipleChoice,
                  CLIPModel, CLIPTextModel, CLIPVisionModel, CLIPTextModelWithProjection,
                  CLIPVisionModelWithProjection, SiglipModel, SiglipTextModel, SiglipVisionModel,
                  Siglip2Model, Siglip2TextModel, Siglip2VisionModel, Siglip2ForImageClassification,
                  ViTModel, ViTForImageClassification, DeiTModel, DeiTForImageClassification,
                  DeiTForImageClassificationWithTeacher, Dinov2Model, Dinov2ForImageClassification,
                  Dinov2WithRegistersModel, Dinov2WithRegistersForImageClassification, SwinModel,
                  SwinForImageClassification, BeitModel, BeitForImageClassification, Dinov2Backbone,
                  Dinov2WithRegistersBackbone, SwinBackbone, Swinv2Model, Swinv2ForImageClassification,
                  Swinv2Backbone, DepthAnythingForDepthEstimation, DPTModel, DPTForDepthEstimation,
                  DPTForSemanticSegmentation)}
# model_type -> class, for configs that do not list their architecture
_BY_TYPE = {"clip": CLIPModel, "clip_text_model": CLIPTextModel, "clip_vision_model": CLIPVisionModel,
            "siglip": SiglipModel, "siglip_text_model": SiglipTextModel,
            "siglip_vision_model": SiglipVisionModel, "siglip2": Siglip2Model,
            "siglip2_text_model": Siglip2TextModel, "siglip2_vision_model": Siglip2VisionModel, "vit": ViTModel,
            "deit": DeiTModel,
            "dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel, "swin": SwinModel,
            "swinv2": Swinv2Model, "beit": BeitModel, "depth_anything": DepthAnythingForDepthEstimation,
            "dpt": DPTModel,
            "gpt2": GPT2LMHeadModel, "bert": BertModel, "roberta": RobertaModel, "xlm-roberta": XLMRobertaModel,
            "modernbert": ModernBertModel, "distilbert": DistilBertModel, "deberta-v2": DebertaV2Model,
            "mpnet": MPNetModel, "electra": ElectraModel, "albert": AlbertModel,
            "llama": LlamaForCausalLM, "mistral": MistralForCausalLM,
            "qwen2": Qwen2ForCausalLM, "qwen3": Qwen3ForCausalLM, "phi3": Phi3ForCausalLM,
            "gemma": GemmaForCausalLM, "gemma2": Gemma2ForCausalLM, "gemma3_text": Gemma3ForCausalLM,
            "gemma3": Gemma3ForConditionalGeneration, "llava": LlavaForConditionalGeneration,
            "llava_next": LlavaNextForConditionalGeneration,
            "paligemma": PaliGemmaForConditionalGeneration, "qwen2_vl": Qwen2VLForConditionalGeneration,
            "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
            "gpt_neox": GPTNeoXForCausalLM, "olmo2": Olmo2ForCausalLM, "olmo3": Olmo3ForCausalLM,
            "phi": PhiForCausalLM,
            "starcoder2": Starcoder2ForCausalLM,
            "stablelm": StableLmForCausalLM,
            "granite": GraniteForCausalLM,
            "mixtral": MixtralForCausalLM,
            "qwen2_moe": Qwen2MoeForCausalLM, "qwen3_moe": Qwen3MoeForCausalLM, "t5": T5ForConditionalGeneration,
            "mt5": MT5ForConditionalGeneration, "umt5": UMT5ForConditionalGeneration,
            "longt5": LongT5ForConditionalGeneration,
            "bart": BartForConditionalGeneration,
            "marian": MarianMTModel, "mbart": MBartForConditionalGeneration,
            "m2m_100": M2M100ForConditionalGeneration, "nllb-moe": NllbMoeForConditionalGeneration,
            "pegasus": PegasusForConditionalGeneration, "pegasus_x": PegasusXForConditionalGeneration,
            "prophetnet": ProphetNetForConditionalGeneration,
            "blenderbot": BlenderbotForConditionalGeneration,
            "blenderbot-small": BlenderbotSmallForConditionalGeneration, "whisper": WhisperForConditionalGeneration}


def decoder_architectures(encoder_decoders: bool = False) -> str:
    """The decoder-only architectures from_pretrained builds (those with a KV cache: what generate and
    export_with_past take), comma-separated, for the errors that refuse another model; with ``encoder_decoders``,
    followed by the encoder-decoders generate also takes."""
    seq2seq = [n for n, c in ARCHITECTURES.items() if getattr(c, "is_encoder_decoder", False)]
    text = ", ".join(n for n, c in ARCHITECTURES.items() if hasattr(c, "new_cache") and n not in seq2seq)
    return text + "; or an encoder-decoder: " + ", ".join(seq2seq) if encoder_decoders else text


# architectures that are another one's under a different name
_ALIASES: Dict[str, type] = {}
# decoders saved without their LM head (transformers' base models, as sentence-transformers saves a decoder embedding
# model such as Qwen3-Embedding): their weights lack the "model." prefix; they give hidden states, not logits
_BASE_DECODERS = {"LlamaModel": LlamaForCausalLM, "MistralModel": MistralForCausalLM, "Qwen2Model": Qwen2ForCausalLM,
                  "Qwen3Model": Qwen3ForCausalLM}


def _architecture(cfg: dict, path: str):
    names = cfg.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES or name in _ALIASES or name in _BASE_DECODERS:
            return ARCHITECTURES.get(name) or _ALIASES.get(name) or _BASE_DECODERS[name]
    if not names and cfg.get("model_type") in _BY_TYPE:
        return _BY_TYPE[cfg["model_type"]]
    got = ", ".join(map(str, names)) or f"model_type {cfg.get('model_type')!r}"
    raise CheckpointError(f"from_pretrained: {path!r} holds an unsupported architecture ({got}); supported: "
                          f"{', '.join(ARCHITECTURES)}")


_DISTILBERT_KEYS = ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings")
_SEQ2SEQ_KEYS = ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                 "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings")


_PROPHETNET_KEYS = ("vocab_size", "hidden_size", "num_encoder_layers", "num_decoder_layers",
                    "num_encoder_attention_heads", "num_decoder_attention_heads", "encoder_ffn_dim",
                    "decoder_ffn_dim", "max_position_embeddings")
_VIT_KEYS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size")
_T5_KEYS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
_WHISPER_KEYS = ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                 "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "num_mel_bins",
                 "max_source_positions", "max_target_positions")


def _required(cfg: dict, cls, path: str) -> None:
    if cls.__module__.endswith((".clip", ".siglip", ".siglip2")):
        return  # their text and vision configs are checked as the model is built (clip.sub_config)
    llama = ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size")
    keys = {GPT2LMHeadModel: ("vocab_size", "n_embd", "n_head", "n_layer", "n_positions"),
            LlamaForCausalLM: llama, MistralForCausalLM: llama, Qwen2ForCausalLM: llama, Qwen3ForCausalLM: llama,
            Phi3ForCausalLM: llama, Gemma2ForCausalLM: llama, Gemma3ForCausalLM: llama,
            GemmaForCausalLM: llama, GPTNeoXForCausalLM: llama,
            # the text and vision sizes sit in text_config / vision_config (checked as the model is built)
            Gemma3ForConditionalGeneration: (), LlavaForConditionalGeneration: (),
            LlavaNextForConditionalGeneration: (),
            PaliGemmaForConditionalGeneration: (), Qwen2VLForConditionalGeneration: (),
            Qwen2_5_VLForConditionalGeneration: (),
            Olmo2ForCausalLM: llama, Olmo3ForCausalLM: llama,
            PhiForCausalLM: llama,
            Starcoder2ForCausalLM: llama,
            StableLmForCausalLM: llama,
            GraniteForCausalLM: llama,
            MixtralForCausalLM: llama + ("num_experts_per_tok",),
            Qwen2MoeForCausalLM: llama + ("num_experts", "num_experts_per_tok", "moe_intermediate_size",
                                          "shared_expert_intermediate_size"),
            Qwen3MoeForCausalLM: llama + ("num_experts_per_tok", "moe_intermediate_size"),
            T5ForConditionalGeneration: _T5_KEYS, MT5ForConditionalGeneration: _T5_KEYS,
            UMT5ForConditionalGeneration: _T5_KEYS, LongT5ForConditionalGeneration: _T5_KEYS,
            DistilBertModel: _DISTILBERT_KEYS, DistilBertForSequenceClassification: _DISTILBERT_KEYS,
            DistilBertForQuestionAnswering: _DISTILBERT_KEYS, DistilBertForMultipleChoice: _DISTILBERT_KEYS,
            BartForConditionalGeneration: _SEQ2SEQ_KEYS, MarianMTModel: _SEQ2SEQ_KEYS,
            MBartForConditionalGeneration: _SEQ2SEQ_KEYS, M2M100ForConditionalGeneration: _SEQ2SEQ_KEYS,
            NllbMoeForConditionalGeneration: _SEQ2SEQ_KEYS, PegasusForConditionalGeneration: _SEQ2SEQ_KEYS,
            PegasusXForConditionalGeneration: _SEQ2SEQ_KEYS, BlenderbotForConditionalGeneration: _SEQ2SEQ_KEYS,
            BlenderbotSmallForConditionalGeneration: _SEQ2SEQ_KEYS,
            ProphetNetForConditionalGeneration: _PROPHETNET_KEYS,
            WhisperForConditionalGeneration: _WHISPER_KEYS,
            **{c: _VIT_KEYS for c in (ViTModel, ViTForImageClassification, DeiTModel, DeiTForImageClassification,
                                      DeiTForImageClassificationWithTeacher, BeitModel, BeitForImageClassification)},
            # DINOv2's MLP width is hidden_size * mlp_ratio: no intermediate_size
            **{c: _VIT_KEYS[:3] for c in (Dinov2Model, Dinov2ForImageClassification, Dinov2WithRegistersModel,
                                          Dinov2WithRegistersForImageClassification, Dinov2Backbone,
                                          Dinov2WithRegistersBackbone)},
            # Swin: per-stage depths and heads (lists, checked as the model is built)
            **{c: ("embed_dim", "window_size") for c in (SwinModel, SwinForImageClassification, SwinBackbone,
                                                         Swinv2Model, Swinv2ForImageClassification, Swinv2Backbone)},
            # Depth Anything: the DINOv2 backbone's sizes sit in backbone_config (checked as the model is built)
            DepthAnythingForDepthEstimation: ("fusion_hidden_size",), DPTModel: _VIT_KEYS,
            # DPT's task models: a DINOv2 backbone_config or the ViT's sizes (checked as the model is built)
            DPTForDepthEstimation: ("fusion_hidden_size",), DPTForSemanticSegmentation: ("fusion_hidden_size",),
            }.get(cls, ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                        "max_position_embeddings"))
    for key in keys:
        if not isinstance(cfg.get(key), int) or isinstance(cfg.get(key), bool) or cfg[key] <= 0:
            raise CheckpointError(f"from_pretrained: {path!r}: config.json must give {key} as a positive integer, "
                                  f"got {cfg.get(key)!r}")


def _match(model, tensors: Dict[str, np.ndarray], path: str) -> Dict[str, np.ndarray]:
    """The checkpoint's tensors under the model's names, checked: every parameter present with its shape."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if isinstance(model, BertModel):
        if not any(k in tensors for k in expected):
            # an encoder read from a task model's checkpoint: its weights are stored under "bert." ("roberta.")
            n = len(model.prefix)
            tensors = {k[n:]: v for k, v in tensors.items() if k.startswith(model.prefix)}
        if model.pooler is not None and not any(k.startswith("pooler.") for k in tensors):
            model.pooler = None  # saved without its pooler (add_pooling_layer=False): pooler_output is None
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    named = getattr(model, "checkpoint_name", None) or (lambda key: key)  # the name in the files (Mixtral's)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"from_pretrained: {path!r} is missing {len(missing)} tensor(s) the "
                              f"{type(model).__name__} needs, e.g. {[named(k) for k in missing[:3]]}")
    for key, shape in expected.items():
        got = tuple(tensors[key].shape)
        if got != shape:
            raise CheckpointError(f"from_pretrained: {path!r}: tensor {named(key)!r} has shape {got}, but config.json "
                                  f"implies {shape}")
    tied_head = getattr(model, "tied", False) and "lm_head.weight" in tensors
    unexpected = sorted(set(tensors) - set(expected) - ({"lm_head.weight"} if tied_head else set()))
    if unexpected and not isinstance(model, BertModel):
        raise CheckpointError(f"from_pretrained: {path!r} holds {len(unexpected)} tensor(s) the "
                              f"{type(model).__name__} does not have, e.g. {unexpected[:3]} (another architecture?)")
    return {k: tensors[k] for k in expected}


def from_pretrained(path, dtype="float32"):
    """Build the model a Hugging Face checkpoint directory describes, with its weights, in eval mode.

    ``dtype``: ``"float32"`` (default: every weight in float32; bfloat16 and float16 checkpoints are widened,
    which is exact) or ``"bfloat16"``: every Linear layer keeps bfloat16 weights (``WeightOnlyBF16Linear``,
    inference only: the checkpoint's own bits when it stores bfloat16, float32 weights rounded to nearest
    otherwise) with float32 activations, embeddings, norms and biases; about half the memory, and for a
    bfloat16 checkpoint the float32 model's outputs bit for bit. A tied LM head gets a bfloat16 copy of the
    embedding. The model is built without memory for its parameters, which then take the checkpoint's
    arrays: loading peaks at about the model's size, not three times it.

    Raises:
        FileNotFoundError: no such directory.
        CheckpointError (a ValueError): no config.json, an unsupported architecture, a missing tensor, a
            tensor of the wrong shape, a truncated or corrupt safetensors file, or only pickle files.
        ValueError: a dtype other than float32 / bfloat16.
    """
    want = weights_dtype(dtype)
    path = os.fspath(path)
    cfg = read_config(path)
    cls = _architecture(cfg, path)
    _required(cfg, cls, path)
    with device("meta"):  # parameters without memory: the checkpoint's arrays take their place below
        model = cls(cfg)
    base = next((n for n in cfg.get("architectures") or [] if n in _BASE_DECODERS), None)
    if base is not None:
        model.headless(base)
    raw = read_weights(path, keep_bfloat16=want == BFLOAT16)
    if want == BFLOAT16:
        raw = widen_unless_linear_weights(raw)
    materialize(model, _match(model, model.from_hf(raw), path), want, path)
    # generate's defaults (beams, length limits, no-repeat n-grams, end tokens), as transformers reads them;
    # without the file, transformers' generation config built from config.json's generation keys
    from .generation_settings import from_model_config
    from .tokenizer import _json_object
    file = os.path.join(path, "generation_config.json")
    model.generation_config = _json_object(file) if os.path.isfile(file) else from_model_config(cfg)
    return model.eval()


def save_pretrained(model, path) -> None:
    """Write ``model`` (one built by ``from_pretrained`` or from a config dict, or the zoo's ``gpt``) as a
    Hugging Face checkpoint directory: ``config.json`` and ``model.safetensors``, and ``generation_config.json``
    for a model ``from_pretrained`` loaded (generate's defaults: beams, limits, end tokens, sampling; a checkpoint
    without one: the one built from its config.json, as transformers' save_pretrained writes it)."""
    from ..transformer import GPT
    if isinstance(model, GPT):  # the zoo's gpt is GPT-2's architecture
        model = GPT2LMHeadModel.from_zoo(model)
    if type(model) not in ARCHITECTURES.values():
        raise TypeError(f"save_pretrained: expected one of {', '.join(ARCHITECTURES)}, got {type(model).__name__}")
    quantized = sorted({type(m).__name__ for m in model.modules() if type(m).__module__.startswith(
        "forgegrad.quantization")})
    if quantized:
        raise TypeError(f"save_pretrained: the model holds {', '.join(quantized)} layers, which Hugging Face "
                        "checkpoints do not describe; save the float32 model (from_pretrained(DIR) without "
                        "dtype, before quantize_weight_only), or its state_dict with forgegrad.save")
    cfg = dict(getattr(model, "hf_config", model.config))  # a model built on another's config keeps its own
    cfg["architectures"] = [getattr(model, "architecture_name", model.architecture)]
    cfg.setdefault("model_type", getattr(model, "model_type", "bert"))
    write_checkpoint(path, cfg, model.to_hf(), getattr(model, "generation_config", None))
