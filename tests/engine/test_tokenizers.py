"""Every tokenizer kind round-trips text; special-token policy; files; named encodings offline."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import json
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiktoken_ext import openai_public

from engine import tokenizers as T
from engine.tokenizers import (
    ENDOFTEXT,
    NAMED_ENCODINGS,
    CharTokenizer,
    TiktokenTokenizer,
    TokenizerUnavailable,
    get_tokenizer,
    load_named_encoding,
    load_tiktoken_file,
    load_tokenizer_file,
    named,
    named_encoding_status,
    named_vocab_size,
    save_tokenizer,
    tokenizer_from_dict,
    train_bpe,
)

TRAIN_TEXT = (
    "The quick brown fox jumps over the lazy dog. def main(args):\n    return 42\n"
    "Ünïcödé, 中文字符, emoji 😀🎉 and <|endoftext|> inside ordinary text.\n\n"
) * 40

# Arbitrary text: every code point but lone surrogates (not valid Unicode; their policy is tested apart).
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def bpe_gpt2():
    return train_bpe(TRAIN_TEXT, 300, pattern="gpt2")


@pytest.fixture(scope="module")
def bpe_cl100k():
    return train_bpe(TRAIN_TEXT, 300, pattern="cl100k")


@pytest.fixture(scope="module")
def from_tiktoken_file(tmp_path_factory, bpe_gpt2):
    path = tmp_path_factory.mktemp("tt") / "mine.tiktoken"
    path.write_text(T.ranks_to_text(bpe_gpt2.ranks))
    return load_tiktoken_file(path)


@pytest.fixture(params=["bpe_gpt2", "bpe_cl100k", "from_tiktoken_file"])
def bpe(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path / "cache"))
    named._forget_named_encodings()
    yield
    named._forget_named_encodings()


# ---------------------------------------------------------------- round trips

@fast
@given(text=st.text(max_size=300))
def test_char_round_trips_over_its_own_alphabet(text):
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


def test_char_keeps_lone_surrogates_of_its_corpus():
    text = "a\ud800b"
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


@fast
@given(text=any_text)
def test_bpe_round_trips_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text
    assert bpe.decode_bytes(bpe.encode(text)) == text.encode("utf-8")


def test_bpe_lone_surrogates_become_replacement_characters(bpe):
    assert bpe.decode(bpe.encode("a\ud800b")) == "a\ufffdb"
    assert bpe.decode(bpe.encode("\ud83d\ude00")) == "😀"  # a pair written as two code points


@pytest.mark.parametrize("text", ["", "x", "😀🎉👍🏽", "中文字符和日本語のテキスト", "tab\there\r\nnull\x00end",
                                  ENDOFTEXT, "  \n\n\t  "])
def test_bpe_edge_texts(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.vocab_size for i in ids)
    if not text:
        assert ids == [] and bpe.decode([]) == ""


@pytest.mark.parametrize("run", [" " * 100_000, "a" * 100_000, "\n" * 100_000, "1" * 100_000, "😀" * 30_000,
                                 "ab" * 50_000])
def test_long_runs_of_one_character_complete(bpe, run):
    assert bpe.decode(bpe.encode(run)) == run


# ---------------------------------------------------------------- special tokens and display

def test_special_token_text_is_ordinary_text(bpe_gpt2):
    ids = bpe_gpt2.encode("a <|endoftext|> b")
    assert bpe_gpt2.eot_id is not None and bpe_gpt2.eot_id not in ids
    assert bpe_gpt2.decode([bpe_gpt2.eot_id]) == ENDOFTEXT
    assert bpe_gpt2.eot_id == bpe_gpt2.vocab_size - 1


def test_render_token_escapes_control_characters_and_broken_utf8(bpe_gpt2):
    newline = bpe_gpt2.encode("\n")
    assert bpe_gpt2.render_token(newline[0]) == "\\n"
    first_byte = bpe_gpt2.encode("😀")[0]
    assert bpe_gpt2.render_token(first_byte).startswith("\\x")


def test_unknown_ids_never_raise(bpe_gpt2):
    assert bpe_gpt2.token_bytes(10**6) == "\ufffd".encode()
    assert bpe_gpt2.decode([bpe_gpt2.encode("hi")[0], 10**6]) == "h\ufffd"


def test_vocab_size_is_what_was_asked(bpe_gpt2, bpe_cl100k):
    assert bpe_gpt2.vocab_size == 300 and bpe_cl100k.vocab_size == 300


def test_text_that_runs_out_of_pairs_gives_a_smaller_vocab():
    tok = train_bpe("abab abab", 5000)
    assert 257 < tok.vocab_size < 5000 and tok.eot_id == tok.vocab_size - 1


# ---------------------------------------------------------------- state and files

def test_to_dict_round_trips_through_json(bpe):
    data = json.loads(json.dumps(bpe.to_dict()))
    again = tokenizer_from_dict(data)
    assert isinstance(again, TiktokenTokenizer)
    sample = TRAIN_TEXT[:2000]
    assert again.encode(sample) == bpe.encode(sample)
    assert again.eot_id == bpe.eot_id and again.vocab_size == bpe.vocab_size and again.name == bpe.name


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.pop("ranks"), "needs"),
    (lambda d: d.update(ranks="!!! 0\n"), "line 1"),
    (lambda d: d.update(ranks="".join(line + "\n" for line in d["ranks"].splitlines()[1:])), "byte 0x00"),
    (lambda d: d.update(special_tokens={ENDOFTEXT: 5}), "special token id 5"),
    (lambda d: d.update(special_tokens={ENDOFTEXT: "x"}), "special_tokens"),
    (lambda d: d.update(pattern="(unclosed"), "refused"),
])
def test_bad_tokenizer_state_is_refused_clearly(bpe_gpt2, mutate, words):
    data = bpe_gpt2.to_dict()
    mutate(data)
    with pytest.raises(ValueError, match=words):
        tokenizer_from_dict(data)


def test_save_and_load_tokenizer_file(tmp_path, bpe_cl100k):
    path = tmp_path / "tok.json"
    save_tokenizer(bpe_cl100k, path)
    again = load_tokenizer_file(path)
    assert again.encode(TRAIN_TEXT) == bpe_cl100k.encode(TRAIN_TEXT)
    assert get_tokenizer(str(path)).encode("hello") == bpe_cl100k.encode("hello")
    char = CharTokenizer.from_text("abc")
    save_tokenizer(char, path)
    assert load_tokenizer_file(path).encode("cab") == char.encode("cab")


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(ValueError, match="no such tokenizer file"):
        load_tokenizer_file(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not an LLM Playground tokenizer file"):
        load_tokenizer_file(tmp_path / "x.json")
    (tmp_path / "y.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ValueError, match="not a tokenizer file"):
        load_tokenizer_file(tmp_path / "y.json")


def test_tiktoken_file_gets_gpt2_pattern_and_an_eot(from_tiktoken_file, bpe_gpt2):
    assert from_tiktoken_file.name == "mine"
    assert from_tiktoken_file.encode(TRAIN_TEXT) == bpe_gpt2.encode(TRAIN_TEXT)
    assert from_tiktoken_file.eot_id == len(bpe_gpt2.ranks)


def test_tiktoken_file_of_a_named_encoding_gets_its_settings(tmp_path, monkeypatch, bpe_cl100k):
    data = T.ranks_to_text(bpe_cl100k.ranks).encode()
    spec = T.NAMED_ENCODINGS["cl100k_base"]
    fake = dataclasses.replace(spec, files=((spec.files[0][0], hashlib.sha256(data).hexdigest()),),
                               special_tokens={ENDOFTEXT: 299})
    monkeypatch.setitem(T.NAMED_ENCODINGS, "cl100k_base", fake)
    path = tmp_path / "copy.tiktoken"
    path.write_bytes(data)
    tok = load_tiktoken_file(path)
    assert tok.name == "cl100k_base" and tok.pattern == T.CL100K_PATTERN and tok.eot_id == 299


# ---------------------------------------------------------------- get_tokenizer

def test_get_tokenizer_specs():
    assert isinstance(get_tokenizer("char", "abc"), CharTokenizer)
    tok = get_tokenizer("bpe:300", TRAIN_TEXT)
    assert tok.vocab_size == 300 and tok.pattern == T.GPT2_PATTERN
    assert get_tokenizer("bpe:300:cl100k", [TRAIN_TEXT]).pattern == T.CL100K_PATTERN
    for bad in ["bpe:", "bpe:x", "bpe:300:nope", "nonsense", ""]:
        with pytest.raises(ValueError):
            get_tokenizer(bad, TRAIN_TEXT)
    with pytest.raises(ValueError, match="needs a corpus"):
        get_tokenizer("char")


# ---------------------------------------------------------------- named encodings

def test_named_encodings_agree_with_tiktoken_before_any_download(monkeypatch):
    """Sizes and special tokens as tiktoken's own definitions state them (its loaders stubbed: no files)."""
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: {})
    monkeypatch.setattr(openai_public, "data_gym_to_mergeable_bpe_ranks", lambda *a, **k: {})
    for name, spec in NAMED_ENCODINGS.items():
        reference = getattr(openai_public, name)()
        size = reference.get("explicit_n_vocab", max(reference["special_tokens"].values()) + 1)
        assert named_vocab_size(name) == spec.vocab_size == size, name
        assert spec.special_tokens == reference["special_tokens"], name
    with pytest.raises(ValueError, match="unknown tiktoken encoding"):
        named_vocab_size("gpt5")


def _refuse_connections(monkeypatch) -> list:
    calls = []

    def refused(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    return calls


def test_named_encoding_offline_is_unavailable_with_a_reason(monkeypatch):
    calls = _refuse_connections(monkeypatch)
    with pytest.raises(TokenizerUnavailable) as info:
        load_named_encoding("cl100k_base")
    assert str(info.value).startswith("cl100k_base: not in the cache and the network is unreachable (")
    assert "Connection refused" in str(info.value)
    assert isinstance(info.value, ValueError)
    # Remembered for the process: the other names and a second try don't knock again.
    n = len(calls)
    with pytest.raises(TokenizerUnavailable, match="o200k_base"):
        get_tokenizer("o200k_base")
    with pytest.raises(TokenizerUnavailable):
        load_named_encoding("cl100k_base")
    assert len(calls) == n
    status = named_encoding_status()
    assert [s[0] for s in status] == ["gpt2", "r50k_base", "p50k_base", "cl100k_base", "o200k_base"]
    assert all(tok is None and reason.startswith(name) for name, tok, reason in status)
    # A checkpoint with a named encoding fails to load with the same one line.
    with pytest.raises(TokenizerUnavailable, match="unreachable"):
        tokenizer_from_dict({"type": "tiktoken", "encoding": "gpt2"})


def test_named_encoding_status_without_download_never_connects(monkeypatch):
    calls = _refuse_connections(monkeypatch)
    status = named_encoding_status(download=False)
    assert all(reason.endswith("not downloaded yet") for _, _, reason in status)
    assert calls == []


def test_named_encoding_with_a_silent_network_gives_up(monkeypatch):
    never = threading.Event()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: never.wait(30))
    monkeypatch.setattr(named, "NAMED_CONNECT_TIMEOUT_S", 0.2)
    with pytest.raises(TokenizerUnavailable, match="did not answer within 0.2 s"):
        load_named_encoding("r50k_base")
    never.set()


def test_named_encoding_downloads_into_the_cache_then_works_offline(monkeypatch, bpe_cl100k, tmp_path):
    data = T.ranks_to_text(bpe_cl100k.ranks).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cl100k_base.tiktoken"
    spec = T.NAMED_ENCODINGS["cl100k_base"]
    fake = dataclasses.replace(spec, files=((url, hashlib.sha256(data).hexdigest()),),
                               special_tokens={ENDOFTEXT: 299})
    monkeypatch.setitem(T.NAMED_ENCODINGS, "cl100k_base", fake)
    try:
        tok = load_named_encoding("cl100k_base")
    finally:
        server.shutdown()
        server.server_close()
    assert tok.named and tok.to_dict() == {"type": "tiktoken", "encoding": "cl100k_base"}
    assert tok.encode(TRAIN_TEXT) == bpe_cl100k.encode(TRAIN_TEXT)
    assert (tmp_path / "cache" / "tiktoken" / hashlib.sha1(url.encode()).hexdigest()).exists()

    named._forget_named_encodings()
    _refuse_connections(monkeypatch)
    again = tokenizer_from_dict({"type": "tiktoken", "encoding": "cl100k_base"})  # from the cache, offline
    assert again.encode("hello world") == tok.encode("hello world")


def test_named_encoding_with_wrong_hash_is_refused(monkeypatch, tmp_path):
    spec = T.NAMED_ENCODINGS["p50k_base"]
    cached = named._cache_path(spec.files[0][0])
    cached.parent.mkdir(parents=True)
    cached.write_text(base64.b64encode(b"a").decode() + " 0\n")  # not the real file
    calls = _refuse_connections(monkeypatch)
    with pytest.raises(TokenizerUnavailable, match="p50k_base"):
        load_named_encoding("p50k_base")
    assert calls  # the bad cache file was not trusted: it tried to fetch the real one


def test_unknown_named_encoding():
    with pytest.raises(ValueError, match="unknown tiktoken encoding"):
        load_named_encoding("nope")


def test_patterns_that_match_empty_text_are_refused_before_tiktoken_panics():
    """tiktoken's Rust core panics on a pattern that matches empty text, printing a Rust backtrace straight to the
    terminal (fd 2, which no Python handler can hide); such a pattern must be refused before it gets there."""
    script = textwrap.dedent("""
        from engine.tokenizers.bpe import TiktokenTokenizer
        ranks = {bytes([b]): b for b in range(256)}
        for pattern in ["x*", "a|", "(?=a)", "(?<=,)", "\\\\b"]:
            try:
                TiktokenTokenizer.from_ranks("t", ranks, pattern)
            except ValueError as e:
                print(e)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 5 and all("can match empty text" in line for line in lines), proc.stdout
