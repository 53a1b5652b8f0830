"""A checkpoint's chat template: the Jinja template that turns chat messages into the prompt text the
model was trained on, as transformers' ``apply_chat_template`` renders it.

The template comes from the checkpoint directory (``chat_template.jinja``, or ``chat_template`` in
``tokenizer_config.json``), so it is untrusted input: it is rendered in Jinja's immutable sandbox
(no attribute access to Python internals, no mutation of the data passed in), with only the helpers
transformers gives templates (``raise_exception``, ``strftime_now``, a ``tojson`` that does not escape
HTML) and the tokenizer's special tokens (``bos_token``, ``eos_token``, ...). Needs jinja2 >= 3.1.6
(earlier versions have known sandbox escapes), from the ``hf`` extra.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Dict, List, Optional

from ._files import read_json_object

__all__ = ["ChatTemplate", "load_chat_template"]

_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def _token_text(value) -> Optional[str]:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class ChatTemplate:
    def __init__(self, source: str, special_tokens: Optional[Dict[str, str]] = None):
        try:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            raise ImportError('chat templates need jinja2: pip install "forgegrad[hf]"') from None
        if tuple(int(p) for p in jinja2.__version__.split(".")[:3] if p.isdigit()) < (3, 1, 6):
            raise ImportError(f"chat templates need jinja2 >= 3.1.6 (earlier sandboxes have known escapes), "
                              f"found {jinja2.__version__}")

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except jinja2.exceptions.TemplateError as e:
            raise ValueError(f"the chat template does not parse: {e}") from None
        self._errors = jinja2.exceptions.TemplateError
        self.source = source
        self.special_tokens = dict(special_tokens or {})

    def render(self, messages: List[dict], add_generation_prompt: bool = True, tools: Optional[List[dict]] = None
               ) -> str:
        """The prompt text for ``messages`` (dicts with "role" and "content"), ending with the start of
        the assistant's turn when ``add_generation_prompt``; ``tools``: the functions the model may call (JSON
        schemas, ``{"type": "function", "function": {...}}``), for templates that render them. A template that
        refuses the messages (say, roles out of order) raises ValueError with its message."""
        try:
            # tools and documents are always defined (None when not given), as transformers renders them
            return self._template.render(messages=messages, tools=tools, documents=None,
                                         add_generation_prompt=add_generation_prompt, **self.special_tokens)
        except self._errors as e:
            raise ValueError(f"the chat template refused the messages: {e}") from None


def load_chat_template(path) -> Optional[ChatTemplate]:
    """The chat template of a checkpoint directory, or None when it has none."""
    path = os.fspath(path)
    config_file = os.path.join(path, "tokenizer_config.json")
    config = read_json_object(config_file, "chat template") if os.path.isfile(config_file) else {}
    source = None
    jinja_file = os.path.join(path, "chat_template.jinja")
    if os.path.isfile(jinja_file):
        with open(jinja_file, encoding="utf-8") as f:
            source = f.read()
    else:
        source = config.get("chat_template")
        if isinstance(source, list):  # named templates: the default one
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = named.get("default")
    if not isinstance(source, str) or not source:
        return None
    special = {name: text for name in _SPECIAL if (text := _token_text(config.get(name))) is not None}
    return ChatTemplate(source, special)
