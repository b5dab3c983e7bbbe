"""Chat templates: a conversation rendered into the prompt text (and ids) a chat model was trained on.

Models on the Hugging Face hub ship a Jinja template (tokenizer_config.json's `chat_template` or
`chat_template.jinja`). It is rendered here the way transformers' `apply_chat_template(messages,
add_generation_prompt=True, tokenize=False)` renders it, so the prompt is byte for byte what the model saw
in training:

- a sandboxed, immutable Jinja environment (templates come from the internet: no attribute tricks, no
  mutation of our objects) with trim_blocks and lstrip_blocks, and the loop controls extension;
- `raise_exception(msg)` (templates use it to refuse e.g. a bad role), `strftime_now(fmt)`, a `tojson`
  filter that writes plain JSON (no HTML escaping, non-ASCII kept, like transformers'), and transformers'
  `{% generation %}` tag (rendered as its body);
- variables: `messages`, `add_generation_prompt`, `tools`/`documents` (None), and the named special
  tokens (`bos_token`, `eos_token`, `unk_token`, `pad_token`...) as text.

The rendered text already holds the special tokens, so `chat_prompt_ids` encodes it *without* adding any
(transformers does the same): a template that writes `{{ bos_token }}` gets exactly one BOS.
A template that doesn't compile, refuses the conversation or fails while rendering is one ValueError line.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

    from engine.tokenizers.hf import HFTokenizer

MAX_MESSAGES = 10_000
MAX_DEPTH = 32  # nesting of message values (content blocks, tool calls)
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class ChatTemplateError(ValueError):
    """A chat template that can't render this conversation; the message is one line for the user."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    """The template compiled in a sandbox (cached: a chat renders the same template every turn)."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """transformers' `{% generation %}...{% endgeneration %}` (marks assistant text); renders its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: Any) -> None:
        raise jinja2.exceptions.TemplateError(str(message))

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    class Namespace(jinja2.utils.Namespace):
        """`namespace(...)` that refuses underscore names (no reaching into Python internals)."""

        def __init__(*args: Any, **kwargs: Any) -> None:
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for key in attrs:
                Namespace._check(key)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, key: str, value: Any) -> None:
            Namespace._check(key)
            jinja2.utils.Namespace.__setitem__(self, key, value)

        @staticmethod
        def _check(key: Any) -> None:
            if isinstance(key, str) and key.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"a namespace attribute may not start with '_' ({key!r})")

    class TemplateDict:
        """`dict(...)` and `dict.fromkeys(...)` for templates, without exposing the dict type itself."""

        def __call__(self, *args: Any, **kwargs: Any) -> dict:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any) -> dict:
            return dict.fromkeys(*args)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["namespace"] = Namespace
    env.globals["dict"] = TemplateDict()
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template has a syntax error on line {e.lineno}: {_one_line(e.message or '')}"
                                ) from None


def _plain(value: Any, depth: int = 0) -> Any:
    """A copy of message data made only of JSON types (what a template may see); anything else is refused."""
    if depth > MAX_DEPTH:
        raise ChatTemplateError("a chat message is nested too deeply")
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    for base in (bool, str, int, float):  # subclasses (enums, numpy scalars) lose their extra methods
        if isinstance(value, base):
            return base(value)
    raise ChatTemplateError(f"a chat message holds a {type(value).__name__}, which a template can't be given")


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as transformers hands them to a template: plain dicts, keys with None values dropped, and a
    message's reasoning under both `reasoning_content` and `thinking` (the names templates read)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatTemplateError("messages must be a list of {'role': ..., 'content': ...} objects")
    if len(messages) > MAX_MESSAGES:
        raise ChatTemplateError(f"more than {MAX_MESSAGES:,} chat messages")
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"a chat message must be an object, not {type(message).__name__}")
        plain = {k: v for k, v in _plain(message).items() if v is not None}
        reasoning = next((plain[k] for k in _REASONING_FIELDS if plain.get(k) is not None), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        out.append(plain)
    return out


def render_chat(template: str, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                special_tokens: Mapping[str, str] | None = None, **variables: Any) -> str:
    """The template rendered for `messages` (see the module docstring); ChatTemplateError on failure.

    special_tokens: the named special tokens' text (bos_token, eos_token...); `variables` are passed to the
    template too and win over them (e.g. enable_thinking=False for templates that read it).
    """
    import jinja2

    if not isinstance(template, str) or not template:
        raise ChatTemplateError("this model has no chat template")
    compiled = _compile(template)
    context = {**dict(special_tokens or {}), **_plain(variables)}
    try:
        return compiled.render(messages=normalize_messages(messages), tools=None, documents=None,
                               add_generation_prompt=add_generation_prompt, **context)
    except ChatTemplateError:
        raise
    except jinja2.exceptions.UndefinedError as e:
        raise ChatTemplateError(f"the chat template failed: {_one_line(str(e))}") from None
    except jinja2.exceptions.SecurityError as e:
        raise ChatTemplateError(f"the chat template tried something unsafe: {_one_line(str(e))}") from None
    except jinja2.TemplateError as e:  # raise_exception() lands here: the template refused the conversation
        raise ChatTemplateError(f"the chat template refused the conversation: {_one_line(str(e))}") from None
    except Exception as e:  # a template bug (e.g. adding a string to a list) is the template's, not ours
        raise ChatTemplateError(f"the chat template failed: {type(e).__name__}: {_one_line(str(e))}") from None


def chat_messages(messages: Sequence[Mapping[str, Any]], system: str | None = None) -> list[Mapping[str, Any]]:
    """The conversation with `system` (if given) as a first system message."""
    if system is None:
        return list(messages)
    if not isinstance(system, str):
        raise ChatTemplateError("the system prompt must be text")
    return [{"role": "system", "content": system}, *messages]


def chat_prompt_text(tokenizer: HFTokenizer, messages: Sequence[Mapping[str, Any]], system: str | None = None,
                     *, add_generation_prompt: bool = True, **variables: Any) -> str:
    """The tokenizer's chat template rendered for the conversation (ChatTemplateError if it has none)."""
    template = tokenizer.chat_template
    if not template:
        raise ChatTemplateError(f"{tokenizer.name} has no chat template (it is not a chat model)")
    return render_chat(template, chat_messages(messages, system), add_generation_prompt=add_generation_prompt,
                       special_tokens=tokenizer.config.special_tokens, **variables)


def chat_prompt_ids(tokenizer: HFTokenizer, messages: Sequence[Mapping[str, Any]], system: str | None = None,
                    *, add_generation_prompt: bool = True, **variables: Any) -> list[int]:
    """The ids of the rendered conversation, encoded without adding special tokens (the template wrote them),
    equal to transformers' `apply_chat_template(messages, add_generation_prompt=True, tokenize=True)`."""
    text = chat_prompt_text(tokenizer, messages, system, add_generation_prompt=add_generation_prompt, **variables)
    return tokenizer.encode(text)
