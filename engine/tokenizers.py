"""Tokenizers behind one small interface: encode, decode, per-token bytes and display, JSON state.

Kinds:
- `char`: one token per character of the corpus (CharTokenizer).
- byte-level BPE as a `tiktoken.Encoding` (TiktokenTokenizer, also called BPETokenizer): trained here
  (engine/bpe.py), imported from a Hugging Face vocab.json + merges.txt, read from a `.tiktoken` file, or
  one of tiktoken's named encodings (gpt2, r50k_base, p50k_base, cl100k_base, o200k_base).

Every tokenizer can be written into a checkpoint's metadata (`to_dict`) and rebuilt from it
(`tokenizer_from_dict`), so a model file alone is enough to tokenize again: trained and imported BPEs
store their ranks, pattern and special tokens; named encodings store only their name and are loaded
again from the app's cache (or the network).

Special tokens (the policy): text is always encoded as *ordinary* text. The string "<|endoftext|>" in
a corpus, a prompt or the Tokenizer tab becomes the tokens of "<", "|", "endo"... and never raises and
never becomes the special id; only the engine inserts the real end-of-text id (`eot_id`), to join
documents (engine/data.py). Decoding a special id gives its text ("<|endoftext|>"). So
decode(encode(s)) == s for every string s of valid Unicode.

Lone surrogates (code points U+D800..U+DFFF on their own, which are not valid Unicode and only come
from broken input) cannot be UTF-8 encoded: the BPE tokenizers turn each into U+FFFD, and a surrogate
*pair* written as two code points into the character it stands for (as tiktoken does). The char
tokenizer keeps them if they were in its corpus.

Named encodings never hang offline: their files are fetched into the app's own cache
(`<user cache>/llm-playground/tiktoken`, or $LLM_PLAYGROUND_CACHE/tiktoken) with a short deadline, and
a machine without network gets `TokenizerUnavailable` with the reason within about two seconds.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# Each tokenizer class registers a loader for its "type" tag here.
_LOADERS: dict[str, Callable[[dict[str, Any]], "Tokenizer"]] = {}


def register(type_name: str):
    def wrap(cls):
        cls.type_name = type_name
        _LOADERS[type_name] = cls.from_dict
        return cls
    return wrap


def render_bytes(data: bytes) -> str:
    """A token's bytes as text a person can read: control characters and broken UTF-8 escaped."""
    text = data.decode("utf-8", errors="backslashreplace")
    out = []
    for ch in text:
        if ch == "\\" or ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


class Tokenizer(ABC):
    """Turns text into token ids and back."""

    type_name: str = ""
    name: str = ""
    eot_id: int | None = None  # the end-of-text token's id, if the tokenizer has one

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of the text, special-token strings treated as ordinary text."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for."""

    def decode(self, ids: list[int]) -> str:
        """Text of the ids; a split UTF-8 character becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def render_token(self, token_id: int) -> str:
        """A display string for one token (control characters escaped, as minbpe)."""
        return render_bytes(self.token_bytes(token_id))

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, with a "type" key, enough to rebuild the tokenizer."""

    def describe(self) -> str:
        return f"{self.name} ({self.vocab_size:,} tokens)"


@register("char")
class CharTokenizer(Tokenizer):
    """One token per character; the vocabulary is the corpus's characters, sorted.

    Id 0 is reserved for characters the corpus never had: they encode to it and it decodes to
    U+FFFD, so any text can be encoded; text made only of known characters round-trips exactly.
    """

    UNKNOWN = "\ufffd"

    def __init__(self, chars: str | list[str]):
        chars = sorted(set(chars) - {self.UNKNOWN})
        self.chars = [self.UNKNOWN] + chars
        self._ids = {c: i for i, c in enumerate(self.chars)}
        self.name = "char"

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        get = self._ids.get
        return [get(c, 0) for c in text]

    def decode(self, ids: list[int]) -> str:
        chars = self.chars
        n = len(chars)
        return "".join(chars[i] if 0 <= i < n else self.UNKNOWN for i in map(int, ids))

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < len(self.chars):
            return self.UNKNOWN.encode()
        return self.chars[token_id].encode("utf-8", errors="surrogatepass")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "char", "chars": "".join(self.chars[1:])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CharTokenizer":
        chars = data.get("chars")
        if not isinstance(chars, str):
            raise ValueError("char tokenizer state needs a 'chars' string")
        return cls(chars)


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `Tokenizer.to_dict()` output (e.g. a checkpoint's metadata)."""
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError("tokenizer state must be an object with a 'type'")
    loader = _LOADERS.get(data["type"])
    if loader is None:
        raise ValueError(f"unknown tokenizer type {data['type']!r}")
    return loader(data)


# ---------------------------------------------------------------- byte-level BPE on tiktoken

# Pre-tokenization patterns: text is split into pieces by these before BPE runs inside each piece.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
PATTERNS = {"gpt2": GPT2_PATTERN, "cl100k": CL100K_PATTERN}
ENDOFTEXT = "<|endoftext|>"
MAX_BPE_TOKENS = 1_000_000
_REPLACEMENT = "\ufffd".encode()


class TokenizerUnavailable(ValueError):
    """A tokenizer that can't be had right now (e.g. a named encoding offline); the message is the reason."""


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted: char -> byte.

    GPT-2 (and Hugging Face's ByteLevel) write each byte of a token as one printable character, so
    a space is "Ġ" and a newline "Ċ"; vocab.json and merges.txt hold those strings.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return {c: b for b, c in chars.items()}


def ranks_to_text(ranks: dict[bytes, int]) -> str:
    """Mergeable ranks in the `.tiktoken` file format: one "base64(token) rank" line each."""
    return "".join(f"{base64.b64encode(t).decode('ascii')} {r}\n" for t, r in sorted(ranks.items(), key=lambda x: x[1]))


def ranks_from_text(text: str | bytes, source: str = "ranks") -> dict[bytes, int]:
    """Parse the `.tiktoken` format (as tiktoken.load.load_tiktoken_bpe does, without its cache)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise ValueError(f"{source}: line {number} is not 'base64 rank'") from None
    return ranks


def _check_ranks(ranks: dict[bytes, int], special_tokens: dict[str, int], source: str) -> None:
    """Refuse what tiktoken would choke on (a missing byte makes its Rust core panic)."""
    if not ranks:
        raise ValueError(f"{source}: no tokens")
    if len(ranks) > MAX_BPE_TOKENS:
        raise ValueError(f"{source}: {len(ranks):,} tokens is more than the {MAX_BPE_TOKENS:,} allowed")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{source}: not a byte-level BPE (byte 0x{missing[0]:02x} has no token)")
    values = list(ranks.values())
    if len(set(values)) != len(values):
        raise ValueError(f"{source}: two tokens share a rank")
    if min(values) < 0 or max(values) >= MAX_BPE_TOKENS:
        raise ValueError(f"{source}: a rank is out of range")
    clash = set(special_tokens.values()) & set(values)
    if clash:
        raise ValueError(f"{source}: special token id {min(clash)} is also an ordinary token")


@register("tiktoken")
class TiktokenTokenizer(Tokenizer):
    """Byte-level BPE run by tiktoken: trained, imported, read from a .tiktoken file, or a named encoding.

    Ids are tiktoken's ranks. `encode` treats special-token text as ordinary text (see the module
    docstring); `eot_id` is the id of "<|endoftext|>" where the encoding has it.
    """

    def __init__(self, encoding, *, ranks: dict[bytes, int] | None = None, named: bool = False,
                 name: str | None = None):
        self.encoding = encoding
        self.named = named
        self.name = name or encoding.name
        self._ranks = ranks
        self.eot_id = encoding.encode_single_token(ENDOFTEXT) if ENDOFTEXT in encoding.special_tokens_set else None
        self._merges: list[tuple[int, bytes, bytes, bytes]] | None = None

    @classmethod
    def from_ranks(cls, name: str, ranks: dict[bytes, int], pattern: str,
                   special_tokens: dict[str, int] | None = None) -> "TiktokenTokenizer":
        import tiktoken

        special_tokens = dict(special_tokens or {})
        _check_ranks(ranks, special_tokens, name)
        try:
            encoding = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens)
        except ValueError as e:  # e.g. a pattern the regex engine refuses
            raise ValueError(f"{name}: tiktoken refused the tokenizer ({e})") from None
        return cls(encoding, ranks=ranks, name=name)

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def pattern(self) -> str:
        return self.encoding._pat_str

    @property
    def special_tokens(self) -> dict[str, int]:
        return {t: self.encoding.encode_single_token(t) for t in self.encoding.special_tokens_set}

    @property
    def ranks(self) -> dict[bytes, int]:
        if self._ranks is None:
            self._ranks = dict(self.encoding._mergeable_ranks)  # tiktoken keeps them; it has no public getter
        return self._ranks

    def encode(self, text: str) -> list[int]:
        # encode_ordinary == encode(disallowed_special=(), allowed_special=()): special text stays text.
        return self.encoding.encode_ordinary(text)

    def token_bytes(self, token_id: int) -> bytes:
        try:
            return self.encoding.decode_single_token_bytes(int(token_id))
        except (KeyError, ValueError, OverflowError):
            return _REPLACEMENT  # an id the model may produce but the tokenizer doesn't have

    def decode_bytes(self, ids: list[int]) -> bytes:
        ids = [int(i) for i in ids]
        try:
            return self.encoding.decode_bytes(ids)
        except (KeyError, ValueError, OverflowError):
            return b"".join(self.token_bytes(i) for i in ids)

    def describe(self) -> str:
        return f"{self.name} (byte-level BPE, {self.vocab_size:,} tokens)"

    def to_dict(self) -> dict[str, Any]:
        if self.named:
            return {"type": "tiktoken", "encoding": self.name}
        return {"type": "tiktoken", "name": self.name, "pattern": self.pattern,
                "special_tokens": self.special_tokens, "ranks": ranks_to_text(self.ranks)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TiktokenTokenizer":
        if "encoding" in data:
            name = data["encoding"]
            if name not in NAMED_ENCODINGS:
                raise ValueError(f"unknown tiktoken encoding {name!r}")
            return load_named_encoding(name)
        name, pattern, ranks = data.get("name"), data.get("pattern"), data.get("ranks")
        special = data.get("special_tokens", {})
        if not isinstance(name, str) or not isinstance(pattern, str) or not isinstance(ranks, str):
            raise ValueError("tiktoken tokenizer state needs 'name', 'pattern' and 'ranks' strings")
        if not isinstance(special, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in special.items()):
            raise ValueError("tiktoken tokenizer 'special_tokens' must map strings to ids")
        return cls.from_ranks(name, ranks_from_text(ranks, name), pattern, special)

    def merges(self) -> list[tuple[int, bytes, bytes, bytes]]:
        """(rank, left, right, merged) for every multi-byte token, in rank order (see engine.bpe.merges_table)."""
        if self._merges is None:
            self._merges = _recover_merges(self.ranks)
        return self._merges


BPETokenizer = TiktokenTokenizer


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Split `token` with only the merges ranked below max_rank (what BPE had learned before it)."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, best_rank = None, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def _recover_merges(ranks: dict[bytes, int]) -> list[tuple[int, bytes, bytes, bytes]]:
    """The merge that made each token: BPE on its bytes with the earlier merges leaves exactly two parts."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda x: x[1]):
        if len(token) < 2:
            continue
        parts = _bpe_parts(ranks, token, rank)
        if len(parts) == 2:
            merges.append((rank, parts[0], parts[1], token))
    return merges


# ---------------------------------------------------------------- named tiktoken encodings

_OPENAI = "https://openaipublic.blob.core.windows.net"


@dataclass(frozen=True)
class NamedEncoding:
    """Where tiktoken gets a named encoding (URL, sha256 of each file) and how to use a local copy."""

    name: str
    files: tuple[tuple[str, str], ...]
    pattern: str
    special_tokens: dict
    description: str


NAMED_ENCODINGS: dict[str, NamedEncoding] = {e.name: e for e in [
    NamedEncoding("gpt2", (
        (f"{_OPENAI}/gpt-2/encodings/main/vocab.bpe",
         "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
        (f"{_OPENAI}/gpt-2/encodings/main/encoder.json",
         "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    ), GPT2_PATTERN, {ENDOFTEXT: 50256}, "GPT-2's tokenizer (50,257 tokens)"),
    NamedEncoding("r50k_base", ((f"{_OPENAI}/encodings/r50k_base.tiktoken",
                                 "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"),),
                  GPT2_PATTERN, {ENDOFTEXT: 50256}, "GPT-3's tokenizer (same as GPT-2)"),
    NamedEncoding("p50k_base", ((f"{_OPENAI}/encodings/p50k_base.tiktoken",
                                 "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069"),),
                  GPT2_PATTERN, {ENDOFTEXT: 50256}, "Codex's tokenizer (GPT-2 plus runs of spaces)"),
    NamedEncoding("cl100k_base", ((f"{_OPENAI}/encodings/cl100k_base.tiktoken",
                                   "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),),
                  CL100K_PATTERN, {ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
                  "GPT-4's tokenizer (100k tokens)"),
    NamedEncoding("o200k_base", ((f"{_OPENAI}/encodings/o200k_base.tiktoken",
                                  "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),),
                  O200K_PATTERN, {ENDOFTEXT: 199999, "<|endofprompt|>": 200018},
                  "GPT-4o's tokenizer (200k tokens)"),
]}

NAMED_CONNECT_TIMEOUT_S = 2.0
_named_lock = threading.Lock()
_named_results: dict[str, "TiktokenTokenizer | TokenizerUnavailable"] = {}
_network_down: str | None = None  # the reason, once a connection attempt failed in this process


def tiktoken_cache_dir() -> Path:
    from .download import cache_dir

    return cache_dir() / "tiktoken"


def _cache_path(url: str) -> Path:
    # tiktoken's own cache layout (sha1 of the URL), so tiktoken finds what we fetched.
    return tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest()


def _cached_ok(url: str, sha256: str) -> bool:
    path = _cache_path(url)
    if not path.exists():
        return False
    from .download import file_sha256

    return file_sha256(path) == sha256


def _fetch_named_files(spec: NamedEncoding) -> None:
    """Put the encoding's files into the cache, or raise TokenizerUnavailable (fast when offline)."""
    global _network_down
    from .download import DownloadError, download

    for url, sha256 in spec.files:
        if _cached_ok(url, sha256):
            continue
        if _network_down is not None:
            raise TokenizerUnavailable(f"{spec.name}: not in the cache and the network is unreachable ({_network_down})")
        try:
            download(url, _cache_path(url), sha256=sha256, connect_timeout=NAMED_CONNECT_TIMEOUT_S)
        except DownloadError as e:
            reason = str(e)
            if "cannot reach" in reason or "did not answer" in reason:
                _network_down = reason
                raise TokenizerUnavailable(
                    f"{spec.name}: not in the cache and the network is unreachable ({reason})") from None
            raise TokenizerUnavailable(f"{spec.name}: download failed ({reason})") from None


def load_named_encoding(name: str, *, retry: bool = False) -> TiktokenTokenizer:
    """A named tiktoken encoding (gpt2, r50k_base, p50k_base, cl100k_base, o200k_base).

    Loaded from the app's cache, else downloaded into it; offline this raises TokenizerUnavailable
    within about two seconds. Results and failures are remembered for the process; `retry=True`
    forgets a failure (e.g. after the network came back).
    """
    global _network_down
    spec = NAMED_ENCODINGS.get(name)
    if spec is None:
        raise ValueError(f"unknown tiktoken encoding {name!r}; choose one of {', '.join(NAMED_ENCODINGS)}")
    with _named_lock:
        if retry and isinstance(_named_results.get(name), TokenizerUnavailable):
            del _named_results[name]
            _network_down = None
        result = _named_results.get(name)
        if result is None:
            try:
                result = _load_named(spec)
            except TokenizerUnavailable as e:
                result = e
            _named_results[name] = result
    if isinstance(result, TokenizerUnavailable):
        raise TokenizerUnavailable(str(result))
    return result


def _load_named(spec: NamedEncoding) -> TiktokenTokenizer:
    _fetch_named_files(spec)
    # Built from the verified cache files here rather than by tiktoken.get_encoding, whose loader would
    # go to the network with no timeout if anything were off; the files sit in tiktoken's own cache
    # layout, so TIKTOKEN_CACHE_DIR=<that folder> lets tiktoken itself use them too.
    paths = [_cache_path(url) for url, _ in spec.files]
    try:
        if spec.name == "gpt2":  # GPT-2's original files: encoder.json + vocab.bpe (= HF's vocab + merges)
            tok = tokenizer_from_hf_files(paths[1], paths[0])
            return TiktokenTokenizer(tok.encoding, ranks=tok.ranks, named=True, name=spec.name)
        ranks = ranks_from_text(paths[0].read_bytes(), spec.name)
        tok = TiktokenTokenizer.from_ranks(spec.name, ranks, spec.pattern, spec.special_tokens)
        return TiktokenTokenizer(tok.encoding, ranks=ranks, named=True, name=spec.name)
    except (OSError, ValueError) as e:
        raise TokenizerUnavailable(f"{spec.name}: its cached files could not be read ({e})") from None


def named_encoding_status(*, download: bool = True) -> list[tuple[str, "TiktokenTokenizer | None", str | None]]:
    """(name, tokenizer or None, reason or None) for every named encoding.

    With download=False nothing goes to the network: an encoding not in the cache is reported as
    "not downloaded yet".
    """
    status = []
    for name, spec in NAMED_ENCODINGS.items():
        if not download and name not in _named_results and not all(_cached_ok(u, h) for u, h in spec.files):
            status.append((name, None, f"{name}: not downloaded yet"))
            continue
        try:
            status.append((name, load_named_encoding(name), None))
        except TokenizerUnavailable as e:
            status.append((name, None, str(e)))
    return status


def _forget_named_encodings() -> None:
    """Clear the per-process memory of named encodings (tests; a changed cache folder)."""
    global _network_down
    with _named_lock:
        _named_results.clear()
        _network_down = None


# ---------------------------------------------------------------- files

TOKENIZER_FILE_FORMAT = "llm-playground-tokenizer"


def load_tiktoken_file(path: str | os.PathLike) -> TiktokenTokenizer:
    """A local `.tiktoken` ranks file. A copy of a named encoding's file (same sha256) gets that
    encoding's pattern and special tokens; any other gets GPT-2's pattern and <|endoftext|> after its tokens."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    ranks = ranks_from_text(data, path.name)
    digest = hashlib.sha256(data).hexdigest()
    for spec in NAMED_ENCODINGS.values():
        if len(spec.files) == 1 and spec.files[0][1] == digest:
            return TiktokenTokenizer.from_ranks(spec.name, ranks, spec.pattern, spec.special_tokens)
    special = {ENDOFTEXT: max(ranks.values()) + 1} if ranks else {}
    return TiktokenTokenizer.from_ranks(path.stem, ranks, GPT2_PATTERN, special)


def save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
    """Write a tokenizer to a JSON file (atomically), readable by `load_tokenizer_file`."""
    path = Path(path).expanduser()
    data = {"format": TOKENIZER_FILE_FORMAT, "version": 1, "tokenizer": tokenizer.to_dict()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def load_tokenizer_file(path: str | os.PathLike) -> Tokenizer:
    """A tokenizer from a file written by `save_tokenizer`, or a `.tiktoken` ranks file."""
    path = Path(path).expanduser()
    if path.suffix == ".tiktoken":
        return load_tiktoken_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no such tokenizer file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path.name} is not a tokenizer file ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != TOKENIZER_FILE_FORMAT:
        raise ValueError(f"{path.name} is not an LLM Playground tokenizer file")
    if data.get("version") != 1:
        raise ValueError(f"{path.name}: unsupported tokenizer file version {data.get('version')!r}")
    return tokenizer_from_dict(data.get("tokenizer"))


def tokenizer_from_hf_files(vocab_path: str | os.PathLike, merges_path: str | os.PathLike) -> TiktokenTokenizer:
    """A GPT-2-style byte-level BPE from Hugging Face's vocab.json + merges.txt, as a tiktoken Encoding.

    Ids stay the vocab's ids (tiktoken's ranks), so they equal transformers' GPT-2 tokenizer; tokens that
    are neither a byte nor a merge result (e.g. "<|endoftext|>") become special tokens.
    """
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        merge_lines = merges_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise ValueError(f"the tokenizer needs {Path(e.filename).name} next to the model") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the Hugging Face tokenizer files: {e}") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError("vocab.json must map token strings to ids")
    decoder = gpt2_byte_decoder()

    def to_bytes(token: str) -> bytes:
        try:
            return bytes(decoder[c] for c in token)
        except KeyError:
            raise ValueError(f"merges.txt has {token!r}, which is not a byte-level token") from None

    ranks: dict[bytes, int] = {}
    for token, token_id in vocab.items():
        if len(token) == 1 and token in decoder:
            ranks[bytes([decoder[token]])] = token_id
    last_id = -1
    for number, line in enumerate(merge_lines, 1):
        if not line or line.startswith("#version"):
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise ValueError(f"merges.txt line {number} is not two tokens")
        merged = "".join(pair)
        if merged not in vocab:
            raise ValueError(f"merges.txt line {number}: {merged!r} is not in vocab.json")
        merged_bytes = to_bytes(pair[0]) + to_bytes(pair[1])
        if merged_bytes in ranks:
            continue  # the same token made again by a later merge: the first one wins (as in tiktoken)
        if vocab[merged] <= last_id:
            # tiktoken ranks merges by token id; that only reproduces the merge order if ids grow with it.
            raise ValueError(f"merges.txt line {number}: token ids do not follow the merge order")
        last_id = vocab[merged]
        ranks[merged_bytes] = vocab[merged]
    ordinary = set(ranks.values())
    special = {token: i for token, i in vocab.items() if i not in ordinary}
    return TiktokenTokenizer.from_ranks(f"hf:{vocab_path.parent.name or 'tokenizer'}", ranks, GPT2_PATTERN, special)


# ---------------------------------------------------------------- specs

TOKENIZER_SPECS_HELP = "char, bpe:N (trained on the corpus), a tokenizer file, or " + ", ".join(NAMED_ENCODINGS)


def get_tokenizer(spec: str, corpus_text: str | list[str] | None = None) -> Tokenizer:
    """A tokenizer from a command-line / GUI spec.

    char                      a character vocabulary from `corpus_text`
    bpe:N or bpe:N:cl100k     a byte-level BPE of N tokens trained on `corpus_text` (GPT-2 or cl100k pattern)
    FILE                      a tokenizer file (save_tokenizer) or a .tiktoken file
    gpt2, r50k_base, p50k_base, cl100k_base, o200k_base   a named tiktoken encoding
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a tokenizer is needed: {TOKENIZER_SPECS_HELP}")
    spec = spec.strip()
    if spec == "char":
        if corpus_text is None:
            raise ValueError("the char tokenizer needs a corpus to take its characters from")
        text = corpus_text if isinstance(corpus_text, str) else "".join(corpus_text)
        return CharTokenizer.from_text(text)
    if spec.startswith("bpe:"):
        parts = spec.split(":")
        pattern = parts[2] if len(parts) == 3 else "gpt2"
        if len(parts) not in (2, 3) or not parts[1].isdigit() or pattern not in PATTERNS:
            raise ValueError(f"bad tokenizer {spec!r}: write bpe:N or bpe:N:cl100k, e.g. bpe:4096")
        if corpus_text is None:
            raise ValueError("bpe:N trains on the corpus, and no corpus was given")
        from .bpe import train_bpe

        return train_bpe(corpus_text, int(parts[1]), pattern=pattern)
    if spec in NAMED_ENCODINGS:
        return load_named_encoding(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return load_tokenizer_file(path)
    raise ValueError(f"unknown tokenizer {spec!r}: choose {TOKENIZER_SPECS_HELP}")
