"""BPE training: events and cancel, merges equal to the trainer's, chunking changes nothing, checkpoints."""
from __future__ import annotations

import json

import pytest

from engine.data import load_corpus
from engine.events import ProgressEvent
from engine.tokenizers import (
    BPETrainedEvent,
    CharTokenizer,
    TiktokenTokenizer,
    gpt2_byte_decoder,
    merges_table,
    train_bpe,
    train_bpe_job,
)
from engine.tokenizers import training as B


@pytest.fixture(scope="module")
def docs_text():
    return load_corpus("python-docs").text()[:300_000]


@pytest.fixture(scope="module")
def trained(docs_text):
    return train_bpe(docs_text, 1024)


def test_job_yields_progress_then_the_tokenizer(docs_text):
    events = list(train_bpe_job(docs_text[:100_000], 512, pattern="cl100k", name="mine"))
    assert isinstance(events[0], ProgressEvent) and events[0].job == "bpe"
    assert all(isinstance(e, ProgressEvent) and e.job == "bpe" for e in events[:-1])
    last = events[-1]
    assert isinstance(last, BPETrainedEvent) and last.seconds > 0
    assert last.tokenizer.name == "mine" and last.tokenizer.vocab_size == 512
    assert json.loads(json.dumps(last.to_json())) == {"event": "bpe_trained", "tokenizer": "mine",
                                                      "vocab_size": 512, "seconds": last.seconds}
    counted = [e for e in events[:-1] if e.total > 0]
    assert all(0 <= e.done <= e.total == 100_000 for e in counted)


def test_closing_the_job_cancels_without_a_result(docs_text):
    job = train_bpe_job(docs_text, 2048)
    first = next(job)
    assert isinstance(first, ProgressEvent)
    job.close()  # must not raise, and nothing more comes
    with pytest.raises(StopIteration):
        next(job)


def test_feeding_stops_once_cancelled(monkeypatch, docs_text):
    fed = []
    real = B._valid_unicode

    def spy(chunk):
        fed.append(len(chunk))
        return real(chunk)

    monkeypatch.setattr(B, "CHUNK_CHARS", 1000)
    monkeypatch.setattr(B, "_valid_unicode", spy)
    job = train_bpe_job(docs_text * 20, 4096)  # ~6 MB in 1 kB chunks: counting takes a while
    next(job)
    job.close()
    total_chunks = len(list(B._chunks([docs_text * 20])))
    assert len(fed) < total_chunks


@pytest.mark.parametrize("bad, words", [(100, "between 257"), (True, "whole number"), (10**7, "between")])
def test_bad_vocab_sizes(bad, words):
    with pytest.raises(ValueError, match=words):
        train_bpe("some text", bad)


def test_bad_pattern():
    with pytest.raises(ValueError, match="gpt2 or cl100k"):
        train_bpe("some text", 300, pattern="llama")


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k"])
def test_tiktoken_reproduces_the_trainers_merges(docs_text, pattern):
    """Our Encoding gives the same tokens as the Hugging Face tokenizer that learned the merges."""
    hf = B._hf_tokenizer(pattern)
    hf.train_from_iterator(list(B._chunks([docs_text])), B._hf_trainer(800))
    ours = train_bpe(docs_text, 800, pattern=pattern)
    decoder = gpt2_byte_decoder()
    held_out = load_corpus("python-source").text()[:100_000]
    hf_tokens = [bytes(decoder[c] for c in t) for t in hf.encode(held_out).tokens]
    our_tokens = [ours.token_bytes(i) for i in ours.encode(held_out)]
    assert our_tokens == hf_tokens


def test_chunking_changes_no_merge(monkeypatch, docs_text):
    text = docs_text[:60_000]
    whole = train_bpe(text, 600)
    monkeypatch.setattr(B, "CHUNK_CHARS", 300)
    chunks = list(B._chunks([text]))
    assert len(chunks) > 50 and "".join(chunks) == text
    assert train_bpe(text, 600).ranks == whole.ranks


def test_documents_list_and_awkward_text_train():
    tok = train_bpe(["first <|endoftext|> doc 😀", "second\ud800doc 中文", ""], 300)
    assert tok.decode(tok.encode("second doc <|endoftext|>")) == "second doc <|endoftext|>"


def test_merges_table_is_consistent(trained):
    table = merges_table(trained)
    assert len(table) == trained.vocab_size - 257  # every token but the bytes and end-of-text
    assert [r for r, *_ in table] == sorted(r for r, *_ in table)
    for rank, left, right, merged in table:
        assert left + right == merged and trained.ranks[merged] == rank
        assert trained.ranks[left] < rank and trained.ranks[right] < rank
    assert merges_table(CharTokenizer.from_text("abc")) == []


def test_applying_the_merges_in_order_gives_tiktokens_tokens(trained):
    """A plain minbpe-style encoder driven by merges_table agrees with tiktoken on each piece."""
    import regex

    priority = {(left, right): rank for rank, left, right, _ in merges_table(trained)}
    text = load_corpus("python-source").text()[:20_000]
    ids = []
    for piece in regex.findall(trained.pattern, text):
        parts = [bytes([b]) for b in piece.encode()]
        while len(parts) > 1:
            pairs = [(priority.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == float("inf"):
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        ids.extend(trained.ranks[p] for p in parts)
    assert ids == trained.encode(text)


def test_save_and_load_via_bpe_module(tmp_path, trained):
    path = tmp_path / "t.json"
    B.save_tokenizer(trained, path)
    again = B.load_tokenizer_file(path)
    assert isinstance(again, TiktokenTokenizer) and again.ranks == trained.ranks


def test_checkpoint_trained_with_bpe_reloads_and_tokenizes_identically(tmp_path, docs_text):
    checkpoint = pytest.importorskip("engine.checkpoint")
    trainer_mod = pytest.importorskip("engine.training.trainer")
    from engine.config import TrainConfig, preset
    from engine.data import Corpus, Dataset

    tok = train_bpe(docs_text[:100_000], 300)
    corpus = Corpus("docs", [docs_text[:100_000]], "", "python-docs")
    dataset = Dataset.build(corpus, tok, 32)
    config = preset("tiny").with_changes(vocab_size=tok.vocab_size, context_length=32, n_layers=1, emb_dim=32,
                                         n_heads=2)
    train = TrainConfig(steps=2, batch_size=2, eval_interval=2, eval_batches=1, sample_interval=0,
                        warmup_steps=0, device="cpu")
    trainer = trainer_mod.Trainer(config, train, dataset, tokenizer_spec="bpe:300")
    for _ in trainer.run():
        pass
    path = tmp_path / "model.safetensors"
    trainer.save(path)
    loaded = checkpoint.load_checkpoint(path)
    sample = load_corpus("python-source").text()[:5000] + " <|endoftext|> 😀"
    assert loaded.tokenizer.encode(sample) == tok.encode(sample)
    assert loaded.tokenizer.eot_id == tok.eot_id and loaded.tokenizer.vocab_size == tok.vocab_size
    assert checkpoint.read_checkpoint_info(path)["tokenizer"]["vocab_size"] == 300


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k"])
def test_trainer_sees_the_same_pieces_as_tiktoken(pattern):
    """The trainer's pre-tokenizer (Oniguruma) splits text as tiktoken's regex does.

    Only up to U+FFFF: the regex engines carry different Unicode versions, so letters assigned in
    recent versions (e.g. U+323B0) may be classed differently. That changes what is learned, never
    the round trip.
    """
    import regex
    from hypothesis import given, settings
    from hypothesis import strategies as st

    hf = B._hf_tokenizer(pattern)
    decoder = gpt2_byte_decoder()
    compiled = regex.compile(B.PATTERNS[pattern])
    alphabet = st.sampled_from(list("aZé中 \t\n\r0123456789'sdmtlvre.,!-_😀\u00a0\u2028")) | st.characters(
        exclude_categories=("Cs", "Cn"), max_codepoint=0xFFFF)

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet, max_size=60))
    def check(text):
        pieces = [bytes(decoder[c] for c in p).decode("utf-8") for p, _ in hf.pre_tokenizer.pre_tokenize_str(text)]
        assert pieces == compiled.findall(text)

    check()
