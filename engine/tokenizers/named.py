"""tiktoken's named encodings (gpt2, r50k_base, p50k_base, cl100k_base, o200k_base).

Their files are fetched into the app's own cache (`<cache>/tiktoken`) with a short deadline and checked
by sha256; a machine without network gets `TokenizerUnavailable` with the reason within about two
seconds, never a hang. Each is loaded once per process.
"""
from __future__ import annotations

import hashlib
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.files import cache_dir
from engine.http import DownloadError, download, file_sha256, open_url
from engine.tokenizers.base import register
from engine.tokenizers.bpe import (
    CL100K_PATTERN,
    ENDOFTEXT,
    GPT2_PATTERN,
    O200K_PATTERN,
    TiktokenTokenizer,
    TokenizerUnavailable,
    ranks_from_text,
    tokenizer_from_hf_files,
)

_OPENAI = "https://openaipublic.blob.core.windows.net"
MAX_RANKS_CHARS = 64 * 1024 * 1024  # o200k_base's ranks are ~3.6 MB


@dataclass(frozen=True)
class NamedEncoding:
    """Where tiktoken gets a named encoding (URL, sha256 of each file) and how to use a local copy."""

    name: str
    files: tuple[tuple[str, str], ...]
    pattern: str
    special_tokens: dict
    description: str
    vocab_size: int  # ids in all (tiktoken's n_vocab), known before the files are fetched


NAMED_ENCODINGS: dict[str, NamedEncoding] = {e.name: e for e in [
    NamedEncoding("gpt2", (
        (f"{_OPENAI}/gpt-2/encodings/main/vocab.bpe",
         "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
        (f"{_OPENAI}/gpt-2/encodings/main/encoder.json",
         "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    ), GPT2_PATTERN, {ENDOFTEXT: 50256}, "GPT-2's tokenizer (50,257 tokens)", 50257),
    NamedEncoding("r50k_base", ((f"{_OPENAI}/encodings/r50k_base.tiktoken",
                                 "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"),),
                  GPT2_PATTERN, {ENDOFTEXT: 50256}, "GPT-3's tokenizer (same as GPT-2)", 50257),
    NamedEncoding("p50k_base", ((f"{_OPENAI}/encodings/p50k_base.tiktoken",
                                 "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069"),),
                  GPT2_PATTERN, {ENDOFTEXT: 50256}, "Codex's tokenizer (GPT-2 plus runs of spaces)", 50281),
    NamedEncoding("cl100k_base", ((f"{_OPENAI}/encodings/cl100k_base.tiktoken",
                                   "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),),
                  CL100K_PATTERN, {ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
                  "GPT-4's tokenizer (100k tokens)", 100277),
    NamedEncoding("o200k_base", ((f"{_OPENAI}/encodings/o200k_base.tiktoken",
                                  "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),),
                  O200K_PATTERN, {ENDOFTEXT: 199999, "<|endofprompt|>": 200018},
                  "GPT-4o's tokenizer (200k tokens)", 200019),
]}

NAMED_CONNECT_TIMEOUT_S = 2.0
_named_lock = threading.Lock()
_named_results: dict[str, TiktokenTokenizer | TokenizerUnavailable] = {}
_network_down: str | None = None  # the reason, once a connection attempt failed in this process


def named_vocab_size(name: str) -> int:
    """How many ids a named encoding has (what a model's vocab_size must hold), without loading it."""
    spec = NAMED_ENCODINGS.get(name)
    if spec is None:
        raise ValueError(f"unknown tiktoken encoding {name!r}; choose one of {', '.join(NAMED_ENCODINGS)}")
    return spec.vocab_size


def tiktoken_cache_dir() -> Path:
    return cache_dir() / "tiktoken"


def _cache_path(url: str) -> Path:
    # tiktoken's own cache layout (sha1 of the URL), so tiktoken finds what we fetched.
    return tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest()


def _cached_ok(url: str, sha256: str) -> bool:
    path = _cache_path(url)
    if not path.exists():
        return False
    return file_sha256(path) == sha256


def _fetch_named_files(spec: NamedEncoding) -> None:
    """Put the encoding's files into the cache, or raise TokenizerUnavailable (fast when offline)."""
    global _network_down
    for url, sha256 in spec.files:
        if _cached_ok(url, sha256):
            continue
        if _network_down is not None:
            raise TokenizerUnavailable(
                f"{spec.name}: not in the cache and the network is unreachable ({_network_down})")
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


def named_encoding_problem(name: str, *, connect: bool = True) -> str | None:
    """Why a named encoding cannot be used now (None when it can), without downloading it.

    Usable: loaded in this process, or its files are in the cache. Otherwise it needs the network: a failure
    remembered in this process is the reason; with `connect` its download host is asked once (a HEAD
    request, within NAMED_CONNECT_TIMEOUT_S) and an unreachable host is the reason (and remembered, as a
    failed download would be). With connect=False an encoding whose fate is unknown counts as usable.
    """
    global _network_down
    spec = NAMED_ENCODINGS.get(name)
    if spec is None:
        return f"unknown tiktoken encoding {name[:60]!r}"
    result = _named_results.get(name)
    if isinstance(result, TokenizerUnavailable):
        return str(result)
    if result is not None or all(_cached_ok(u, h) for u, h in spec.files):
        return None
    if _network_down is not None:
        return f"{name}: not in the cache and the network is unreachable ({_network_down})"
    if not connect:
        return None
    try:
        response = open_url(urllib.request.Request(spec.files[0][0], method="HEAD"),
                            connect_timeout=NAMED_CONNECT_TIMEOUT_S)
        response.close()
    except DownloadError as e:
        _network_down = str(e)
        return f"{name}: not in the cache and the network is unreachable ({e})"
    return None


def named_encoding_status(*, download: bool = True) -> list[tuple[str, TiktokenTokenizer | None, str | None]]:
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


@register("tiktoken")
def _tiktoken_from_dict(data: dict[str, Any]) -> TiktokenTokenizer:
    """Rebuild a BPE from its `to_dict()`: a named encoding by name (from the cache), any other from its ranks.

    Registered here rather than on the class because a named encoding is loaded through this module."""
    if "encoding" in data:
        name = data["encoding"]
        if set(data) != {"type", "encoding"} or not isinstance(name, str) or name not in NAMED_ENCODINGS:
            raise ValueError(f"unknown tiktoken encoding {str(name)[:60]!r}")
        return load_named_encoding(name)
    unknown = sorted(set(data) - {"type", "name", "pattern", "special_tokens", "ranks"})
    if unknown:
        raise ValueError(f"tiktoken tokenizer state has an unknown field {str(unknown[0])[:40]!r}")
    name, pattern, ranks = data.get("name"), data.get("pattern"), data.get("ranks")
    special = data.get("special_tokens", {})
    if not isinstance(name, str) or not isinstance(pattern, str) or not isinstance(ranks, str):
        raise ValueError("tiktoken tokenizer state needs 'name', 'pattern' and 'ranks' strings")
    if len(ranks) > MAX_RANKS_CHARS:
        raise ValueError(f"tiktoken tokenizer 'ranks' is more than {MAX_RANKS_CHARS:,} characters")
    if not isinstance(special, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in special.items()):
        raise ValueError("tiktoken tokenizer 'special_tokens' must map strings to ids")
    return TiktokenTokenizer.from_ranks(name, ranks_from_text(ranks, name), pattern, special)
