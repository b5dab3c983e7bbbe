"""Hugging Face `tokenizer.json` tokenizers (Llama, Qwen, Mistral, GPT-2...) behind the engine's Tokenizer API.

`HFTokenizer` wraps a `tokenizers.Tokenizer` built from a tokenizer.json text, plus the few fields of
tokenizer_config.json / generation_config.json the engine needs (special token strings, whether a BOS is
added, the chat template, the end-of-turn ids). `load_hf_tokenizer(folder)` reads them from a model folder.

Special tokens (differs from the tiktoken tokenizers on purpose): `encode` returns exactly what
`tokenizers` gives for `encode(text, add_special_tokens=False)` and what transformers gives for
`tokenizer(text, add_special_tokens=False)`: a special token *written in the text* (`<|im_end|>`, `</s>`)
becomes its id. That is how chat templates work: the rendered prompt is plain text holding the special
tokens, and it is encoded without adding any more. (For tiktoken tokenizers the README's policy keeps
`<|endoftext|>` typed text as ordinary text; these tokenizers follow transformers instead.)
Nothing is added at the ends unless asked: `encode(text, add_special=True)` adds what transformers'
`encode(text)` adds (usually a BOS; see `add_bos`, `bos_id`).

Token bytes: the engine streams generated text by concatenating `token_bytes` and decoding UTF-8, so each
token's raw bytes are worked out from the tokenizer.json decoder:
- byte-level BPE (GPT-2, Llama 3, Qwen): each character of a token stands for one byte (GPT-2's table);
- SentencePiece style (Llama 2, Mistral, Gemma): "▁" is a space and byte-fallback tokens `<0xAB>` are
  the byte 0xAB; the space that the tokenizer put before the text is dropped again at the start of
  `decode` (as `tokenizers` does), not in `token_bytes` (a generated token in mid-text keeps its space).
Added (special) tokens' bytes are their text. An unknown decoder falls back to decoding each token alone
with `tokenizers` (right for whole characters, maybe not for split ones). `decode` equals `tokenizers`'
`decode(ids, skip_special_tokens=False)` for valid text; broken UTF-8 may get a different number of U+FFFD.

Lone surrogates (broken input, not valid Unicode) become U+FFFD before encoding and a surrogate pair
written as two code points becomes its character, as in the other tokenizers.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.files import first_line, read_regular
from engine.tokenizers.base import Tokenizer, register
from engine.tokenizers.bpe import gpt2_byte_decoder
from engine.validate import parse_json

# Bounds on what a checkpoint or a model folder may hand us (a hostile file must not eat the machine).
MAX_TOKENIZER_JSON_CHARS = 64 * 1024 * 1024
MAX_CONFIG_FILE_BYTES = 64 * 1024 * 1024  # tokenizer_config.json can list thousands of added tokens
MAX_CHAT_TEMPLATE_CHARS = 1024 * 1024
MAX_TOKEN_TEXT_CHARS = 1024  # one special token's text
MAX_EXTRA_SPECIAL_TOKENS = 10_000
MAX_EOS_IDS = 64
MAX_NAME_CHARS = 256

# The named special tokens transformers knows (and passes to chat templates), in its order.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
ENDOFTEXT_FALLBACKS = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")

_REPLACEMENT = "\ufffd".encode()
_SURROGATE = re.compile("[\ud800-\udfff]")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clean_text(text: str) -> str:
    """Text `tokenizers` can take: surrogate pairs joined, lone surrogates turned into U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


@dataclass(frozen=True)
class HFTokenizerConfig:
    """What transformers reads from tokenizer_config.json (and generation_config.json) that matters here.

    special_tokens: named special tokens' text ("bos_token" -> "<s>"), passed to chat templates too.
    extra_special_tokens: additional_special_tokens' text (treated as special like the named ones).
    add_bos / add_eos: tokenizer_config's add_bos_token / add_eos_token; None when absent. When set they
        decide what `encode(..., add_special=True)` puts around the text (as transformers 4's Llama tokenizer
        did); when absent, tokenizer.json's own post-processor decides (as transformers 5 always does).
    chat_template: the Jinja chat template, if the model has one.
    eos_ids: generation_config's eos_token_id(s): every id that ends a turn.
    """

    special_tokens: Mapping[str, str] = field(default_factory=dict)
    extra_special_tokens: tuple[str, ...] = ()
    add_bos: bool | None = None
    add_eos: bool | None = None
    chat_template: str | None = None
    eos_ids: tuple[int, ...] = ()


# ---------------------------------------------------------------- decoder plan (for token bytes)

@dataclass(frozen=True)
class _Step:
    kind: str  # bytelevel | replace | bytefallback | metaspace | strip
    a: str = ""
    b: str = ""
    start: int = 0
    stop: int = 0
    first_only: bool = False  # metaspace: drop (not replace) the replacement in the first token
    whole_text: bool = False  # strip: after a Fuse, it applies to the whole decoded text


def _decoder_plan(decoder: Any) -> list[_Step] | None:
    """The decoder of a tokenizer.json as steps we can apply per token; None if it has a step we don't know."""
    if not isinstance(decoder, dict):
        return None
    items = decoder.get("decoders") if decoder.get("type") == "Sequence" else [decoder]
    if not isinstance(items, list):
        return None
    plan: list[_Step] = []
    fused = False
    for d in items:
        kind = d.get("type") if isinstance(d, dict) else None
        if kind == "Fuse":
            fused = True
        elif kind == "ByteLevel" and not fused:
            plan.append(_Step("bytelevel"))
        elif kind == "ByteFallback" and not fused:
            plan.append(_Step("bytefallback"))
        elif kind == "Replace":
            pattern, content = d.get("pattern"), d.get("content")
            if not (isinstance(pattern, dict) and isinstance(pattern.get("String"), str) and isinstance(content, str)):
                return None  # a regex replace could span tokens
            plan.append(_Step("replace", pattern["String"], content))
        elif kind == "Metaspace" and not fused:
            replacement = d.get("replacement", "\u2581")
            scheme = d.get("prepend_scheme", "always" if d.get("add_prefix_space", True) else "never")
            if not isinstance(replacement, str) or len(replacement) != 1:
                return None
            plan.append(_Step("metaspace", replacement, " ", first_only=scheme != "never"))
        elif kind == "Strip":
            content, start, stop = d.get("content"), d.get("start", 0), d.get("stop", 0)
            if not (isinstance(content, str) and len(content) == 1 and isinstance(start, int)
                    and isinstance(stop, int)):
                return None
            plan.append(_Step("strip", content, start=start, stop=stop, whole_text=fused))
        else:
            return None
    return plan


def _strip(data: bytes, char: bytes, start: int, stop: int) -> bytes:
    for _ in range(start):
        if not data.startswith(char):
            break
        data = data[len(char):]
    for _ in range(stop):
        if not data.endswith(char) or not data:
            break
        data = data[:-len(char)]
    return data


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


# ---------------------------------------------------------------- the tokenizer

@register("hf")
class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer.json tokenizer (see the module docstring for the special-token rules).

    Attributes beyond the Tokenizer API:
    - `eot_id`: the end-of-text id the engine uses (to join documents, to stop generating): the eos_token's id.
    - `eos_ids`: every id that ends a turn (generation_config's eos_token_id plus eot_id).
    - `bos_id`, `add_bos`: the BOS id and whether `encode(text, add_special=True)` starts with it.
    - `special_tokens`: special token text -> id (every added token marked special).
    - `chat_template`, `config`: what `engine.tokenizers.chat` needs to render a conversation.
    """

    def __init__(self, tokenizer_json: str, config: HFTokenizerConfig | None = None, *, name: str = "hf"):
        from tokenizers import AddedToken, processors
        from tokenizers import Tokenizer as RustTokenizer

        config = config or HFTokenizerConfig()
        if not isinstance(tokenizer_json, str):
            raise ValueError("tokenizer.json must be text")
        if len(tokenizer_json) > MAX_TOKENIZER_JSON_CHARS:
            raise ValueError(f"tokenizer.json is {len(tokenizer_json):,} characters, more than the "
                             f"{MAX_TOKENIZER_JSON_CHARS:,} allowed")
        try:
            spec = parse_json(tokenizer_json, "tokenizer.json")
        except ValueError as e:
            raise ValueError(str(e).replace("is not valid JSON", "is not JSON")) from None
        if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
            raise ValueError("tokenizer.json must be an object with a 'model'")
        try:
            tok = RustTokenizer.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises a bare Exception for every refusal
            raise ValueError(f"the tokenizers library refused tokenizer.json: {_one_line(str(e))}") from None
        # A tokenizer.json may carry truncation/padding settings; encode must never cut or pad silently.
        tok.no_truncation()
        tok.no_padding()

        # As transformers: the named / extra special tokens become special added tokens. We do it only for
        # text the vocabulary has (transformers would also append new ids, which no model has weights for).
        added_text = {t.content for t in tok.get_added_tokens_decoder().values()}
        promote = [s for s in [*config.special_tokens.values(), *config.extra_special_tokens]
                   if s not in added_text and tok.token_to_id(s) is not None]
        if promote:
            tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in dict.fromkeys(promote)])

        self._tok = tok
        self._json = tokenizer_json
        self.config = config
        self.name = name
        self._added: dict[int, str] = {i: t.content for i, t in tok.get_added_tokens_decoder().items()}
        self.special_tokens: dict[str, int] = {t.content: i for i, t in tok.get_added_tokens_decoder().items()
                                               if t.special}
        self._vocab_size = max(tok.get_vocab_size(with_added_tokens=True),
                               max(self._added, default=-1) + 1)
        self._plan = _decoder_plan(spec.get("decoder"))
        self._byte_decoder = gpt2_byte_decoder()
        self._bytes_cache: dict[int, bytes] = {}

        def token_id(key: str) -> int | None:
            text = config.special_tokens.get(key)
            return tok.token_to_id(text) if text is not None else None

        self.bos_id: int | None = token_id("bos_token")
        eos = token_id("eos_token")
        if eos is None and not config.eos_ids:
            eos = next((i for t in ENDOFTEXT_FALLBACKS if (i := tok.token_to_id(t)) is not None), None)
        self.eot_id = eos if eos is not None else (config.eos_ids[0] if config.eos_ids else None)
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys(
            [*config.eos_ids, *([self.eot_id] if self.eot_id is not None else [])]))
        for i in self.eos_ids:
            if not 0 <= i < self._vocab_size:
                raise ValueError(f"end-of-turn id {i} is outside the vocabulary (0..{self._vocab_size - 1})")

        # What encode(add_special=True) adds, as transformers decides it: explicit add_bos/add_eos flags (or
        # no post-processor at all) mean "BOS? text EOS?"; otherwise tokenizer.json's post-processor.
        if config.add_bos is not None or config.add_eos is not None or tok.post_processor is None:
            bos_text, eos_text = config.special_tokens.get("bos_token"), config.special_tokens.get("eos_token")
            add_bos = bool(config.add_bos) and self.bos_id is not None
            add_eos = bool(config.add_eos) and eos is not None

            def template(seq: str, type_id: int) -> list[str]:  # a list: token text may hold spaces
                return [*([f"{bos_text}:{type_id}"] if add_bos else []), f"${seq}:{type_id}",
                        *([f"{eos_text}:{type_id}"] if add_eos else [])]

            single, pair = template("A", 0), template("A", 0) + template("B", 1)
            special = [*([(bos_text, self.bos_id)] if add_bos else []), *([(eos_text, eos)] if add_eos else [])]
            try:
                tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
            except Exception as e:
                raise ValueError(f"cannot add BOS/EOS to this tokenizer: {_one_line(str(e))}") from None
        try:
            starts = tok.encode("", add_special_tokens=True).ids[:1]
        except Exception as e:
            raise ValueError(f"the tokenizer cannot encode: {_one_line(str(e))}") from None
        self.add_bos: bool = self.bos_id is not None and starts == [self.bos_id]

    # ------------------------------------------------------------ Tokenizer API

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def chat_template(self) -> str | None:
        return self.config.chat_template

    @property
    def tokenizer_json(self) -> str:
        return self._json

    def token_to_id(self, token: str) -> int | None:
        """The id of a token's text (a vocabulary entry or an added token), or None."""
        return self._tok.token_to_id(token)

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        """Ids of the text; special-token text becomes its id (module docstring).

        add_special=True adds what transformers' `encode(text)` adds (e.g. the BOS of Llama models).
        """
        return self._tok.encode(clean_text(text), add_special_tokens=add_special).ids

    def token_bytes(self, token_id: int) -> bytes:
        token_id = int(token_id)
        data = self._bytes_cache.get(token_id)
        if data is None:
            data = self._piece(token_id, first=False)
            if len(self._bytes_cache) < 1_000_000:
                self._bytes_cache[token_id] = data
        return data

    def decode_bytes(self, ids: list[int]) -> bytes:
        ids = [int(i) for i in ids]
        if not ids:
            return b""
        if self._plan is None:
            return self._tok.decode(ids, skip_special_tokens=False).encode("utf-8", "surrogatepass")
        data = self._piece(ids[0], first=True) + b"".join(self.token_bytes(i) for i in ids[1:])
        for step in self._plan:
            if step.kind == "strip" and step.whole_text:
                data = _strip(data, step.a.encode(), step.start, step.stop)
        return data

    def _piece(self, token_id: int, *, first: bool) -> bytes:
        """One token's bytes; `first` applies the rules for the first token of a decode (Metaspace)."""
        if token_id in self._added:
            return self._added[token_id].encode("utf-8", "surrogatepass")
        token = self._tok.id_to_token(token_id) if 0 <= token_id < self._vocab_size else None
        if token is None:
            return _REPLACEMENT  # an id the model may produce but the tokenizer doesn't have
        if self._plan is None:
            return self._tok.decode([token_id], skip_special_tokens=False).encode("utf-8", "surrogatepass")
        value: str | bytes = token
        for step in self._plan:
            if step.kind == "bytelevel" and isinstance(value, str):
                table = self._byte_decoder
                value = bytes(table[c] for c in value) if all(c in table for c in value) else value.encode()
            elif step.kind == "bytefallback" and isinstance(value, str):
                m = _BYTE_TOKEN.fullmatch(value)
                if m:
                    value = bytes([int(m.group(1), 16)])
            elif step.kind == "replace":
                value = (value.replace(step.a, step.b) if isinstance(value, str)
                         else value.replace(step.a.encode(), step.b.encode()))
            elif step.kind == "metaspace":
                new = "" if first and step.first_only else step.b
                value = (value.replace(step.a, new) if isinstance(value, str)
                         else value.replace(step.a.encode(), new.encode()))
            elif step.kind == "strip" and not step.whole_text:
                raw = value.encode() if isinstance(value, str) else value
                value = _strip(raw, step.a.encode(), step.start, step.stop)
        return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value

    def describe(self) -> str:
        model = self._model_type()
        return f"{self.name} (Hugging Face {model}, {self.vocab_size:,} tokens)"

    def _model_type(self) -> str:
        if self._plan and any(s.kind == "bytelevel" for s in self._plan):
            return "byte-level BPE"
        if self._plan and any(s.kind in ("bytefallback", "metaspace") for s in self._plan):
            return "SentencePiece-style tokenizer"
        return "tokenizer"

    # ------------------------------------------------------------ state

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {"type": "hf", "name": self.name, "tokenizer_json": self._json,
                "special_tokens": dict(c.special_tokens), "extra_special_tokens": list(c.extra_special_tokens),
                "add_bos": c.add_bos, "add_eos": c.add_eos, "chat_template": c.chat_template,
                "eos_ids": list(c.eos_ids)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HFTokenizer:
        """Rebuild from `to_dict()`; every field is checked (type, size, id range): bad input is a ValueError."""
        if not isinstance(data, dict):
            raise ValueError("hf tokenizer state must be an object")
        known = {"type", "name", "tokenizer_json", "special_tokens", "extra_special_tokens", "add_bos", "add_eos",
                 "chat_template", "eos_ids"}
        unknown = sorted(str(k)[:40] for k in data if k not in known)
        if unknown:
            raise ValueError(f"hf tokenizer state has unknown field {unknown[0]!r}")
        name = _text(data.get("name", "hf"), "name", MAX_NAME_CHARS)
        tokenizer_json = _text(data.get("tokenizer_json"), "tokenizer_json", MAX_TOKENIZER_JSON_CHARS)
        special = data.get("special_tokens", {})
        if not isinstance(special, dict) or len(special) > len(SPECIAL_TOKEN_NAMES):
            raise ValueError("hf tokenizer 'special_tokens' must map names like 'eos_token' to text")
        for key, value in special.items():
            if key not in SPECIAL_TOKEN_NAMES:
                raise ValueError(f"hf tokenizer 'special_tokens' has an unknown name {str(key)[:40]!r}")
            _text(value, f"special_tokens.{key}", MAX_TOKEN_TEXT_CHARS)
        extra = data.get("extra_special_tokens", [])
        if not isinstance(extra, list) or len(extra) > MAX_EXTRA_SPECIAL_TOKENS:
            raise ValueError(f"hf tokenizer 'extra_special_tokens' must be a list of at most "
                             f"{MAX_EXTRA_SPECIAL_TOKENS:,} strings")
        for value in extra:
            _text(value, "extra_special_tokens entry", MAX_TOKEN_TEXT_CHARS)
        flags = {}
        for key in ("add_bos", "add_eos"):
            value = data.get(key)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"hf tokenizer '{key}' must be true, false or null")
            flags[key] = value
        template = data.get("chat_template")
        if template is not None:
            _text(template, "chat_template", MAX_CHAT_TEMPLATE_CHARS)
        eos_ids = data.get("eos_ids", [])
        if (not isinstance(eos_ids, list) or len(eos_ids) > MAX_EOS_IDS
                or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in eos_ids)):
            raise ValueError(f"hf tokenizer 'eos_ids' must be a list of at most {MAX_EOS_IDS} non-negative ids")
        config = HFTokenizerConfig(special_tokens=dict(special), extra_special_tokens=tuple(extra),
                                   add_bos=flags["add_bos"], add_eos=flags["add_eos"], chat_template=template,
                                   eos_ids=tuple(eos_ids))
        return cls(tokenizer_json, config, name=name)


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"hf tokenizer '{what}' must be a string")
    if len(value) > limit:
        raise ValueError(f"hf tokenizer '{what}' is {len(value):,} characters, more than the {limit:,} allowed")
    return value


# ---------------------------------------------------------------- model folders

def _read_json(path: Path, limit: int = MAX_CONFIG_FILE_BYTES) -> Any:
    """A JSON file of a model folder, size-checked; ValueError with the file's name on any problem."""
    try:
        text = read_regular(path, limit, "JSON file").decode("utf-8")
    except OSError as e:
        raise ValueError(first_line(e)) from None
    except UnicodeDecodeError:
        raise ValueError(f"{path.name} is not valid JSON (not UTF-8 text)") from None
    return parse_json(text, path.name)


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config writes it: a string, or an AddedToken object with 'content'."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and len(value) <= MAX_TOKEN_TEXT_CHARS else None


def _pick_template(value: Any) -> str | None:
    """tokenizer_config's chat_template: a string, or a list of {name, template} (the 'default' one wins)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        template = named.get("default")
        return template if isinstance(template, str) else None
    return None


def read_tokenizer_config(folder: str | os.PathLike) -> HFTokenizerConfig:
    """The HFTokenizerConfig of a model folder: tokenizer_config.json, chat_template.jinja (wins over the
    config's chat_template, as in transformers) and generation_config.json's eos_token_id."""
    folder = Path(folder)
    cfg: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        cfg = _read_json(folder / "tokenizer_config.json")
        if not isinstance(cfg, dict):
            raise ValueError("tokenizer_config.json must be a JSON object")
    special = {k: t for k in SPECIAL_TOKEN_NAMES if (t := _token_text(cfg.get(k))) is not None}
    extra_raw = cfg.get("additional_special_tokens") or cfg.get("extra_special_tokens") or []
    if isinstance(extra_raw, dict):  # transformers 5 may write {name: token}
        extra_raw = list(extra_raw.values())
    extra = tuple(t for v in (extra_raw if isinstance(extra_raw, list) else [])[:MAX_EXTRA_SPECIAL_TOKENS]
                  if (t := _token_text(v)) is not None)
    flags = {k: v if isinstance(v := cfg.get(k), bool) else None for k in ("add_bos_token", "add_eos_token")}
    template = _pick_template(cfg.get("chat_template"))
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            if jinja.stat().st_size > MAX_CHAT_TEMPLATE_CHARS * 4:
                raise ValueError("chat_template.jinja is too large")
            template = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read chat_template.jinja ({type(e).__name__})") from None
    if template is not None and len(template) > MAX_CHAT_TEMPLATE_CHARS:
        raise ValueError(f"the chat template is more than {MAX_CHAT_TEMPLATE_CHARS:,} characters")
    eos_ids: tuple[int, ...] = ()
    if (folder / "generation_config.json").is_file():
        gen = _read_json(folder / "generation_config.json")
        raw = gen.get("eos_token_id") if isinstance(gen, dict) else None
        raw = [raw] if isinstance(raw, int) else raw
        if isinstance(raw, list):
            eos_ids = tuple(i for i in raw[:MAX_EOS_IDS] if isinstance(i, int) and not isinstance(i, bool) and i >= 0)
    return HFTokenizerConfig(special_tokens=special, extra_special_tokens=extra, add_bos=flags["add_bos_token"],
                             add_eos=flags["add_eos_token"], chat_template=template, eos_ids=eos_ids)


def load_hf_tokenizer(folder: str | os.PathLike, name: str | None = None) -> HFTokenizer:
    """The tokenizer of a Hugging Face model folder (tokenizer.json + the configs above); ValueError if unusable."""
    folder = Path(folder).expanduser()
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{folder.name or folder}: no tokenizer.json (only tokenizer.json tokenizers are supported)")
    try:
        text = read_regular(path, MAX_TOKENIZER_JSON_CHARS * 4, "tokenizer.json").decode("utf-8")
    except OSError as e:
        raise ValueError(first_line(e)) from None
    except UnicodeDecodeError:
        raise ValueError("tokenizer.json is not UTF-8 text") from None
    config = read_tokenizer_config(folder)
    return HFTokenizer(text, config, name=(name or f"hf:{_folder_label(folder)}")[:MAX_NAME_CHARS])


def _folder_label(folder: Path) -> str:
    """A readable name for a model folder: the repo id for a snapshot in the HF cache, else the folder's name."""
    folder = folder.absolute()
    repo = folder.parent.parent.name
    if folder.parent.name == "snapshots" and repo.startswith("models--"):
        return repo[len("models--"):].replace("--", "/")
    return folder.name or "tokenizer"
