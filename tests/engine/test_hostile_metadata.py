"""A property test over checkpoint metadata: mutate one field of a valid checkpoint (any field, any hostile
value: another JSON type, huge and negative numbers, 1e309, NaN, long strings, control characters, nesting
100,000 levels deep, a deleted or added field) and run `info`, `generate`, `train --resume` and
`train --init` on it. Each either works, or exits with status 2 and exactly one `error:` line; never a
traceback, an internal error, a crash or a hang, and a failed command writes nothing.

The counts of inputs tried and outcomes are printed at the end (run with -s to see them).
"""
from __future__ import annotations

import collections
import os
import shutil
from pathlib import Path

import pytest
from checkpoint_mutations import metadata_of, mutate, mutations
from hf_fixtures import bytelevel_folder
from hypothesis import HealthCheck, given, settings

from engine.checkpoint import load_checkpoint
from engine.cli import main
from engine.tokenizers import load_hf_tokenizer, save_tokenizer

TINY = ["--preset", "tiny", "--context-length", "8", "--n-layers", "1", "--emb-dim", "16", "--n-heads", "2",
        "--batch-size", "2", "--eval-interval", "1", "--sample-interval", "0"]
COUNTS: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", params=["bpe", "hf"])
def base(request, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny checkpoint with every kind of metadata (training and optimizer state, and a tokenizer: a BPE
    trained here, or a Hugging Face tokenizer.json one), and a small corpus file for --init."""
    folder = tmp_path_factory.mktemp(f"hostile-{request.param}")
    corpus = folder / "corpus.txt"
    corpus.write_text("abcdefgh|abcdefgh\nijklmnop|ijklmnop\n" * 60)
    spec = "bpe:270"
    if request.param == "hf":
        spec = str(folder / "tokenizer.json")
        save_tokenizer(load_hf_tokenizer(bytelevel_folder(folder / "hf")), spec)
    path = folder / "base.safetensors"
    assert main(["train", *TINY, "--corpus", str(corpus), "--tokenizer", spec, "--steps", "2",
                 "--out", str(path)]) == 0
    return path, corpus


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    except BaseException as e:  # noqa: BLE001 - anything escaping main() is the failure this test looks for
        pytest.fail(f"{argv[0]} raised {type(e).__name__}: {e}")
    _, err = capsys.readouterr()
    return code, err


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if COUNTS:
        print("\nhostile metadata:", dict(sorted(COUNTS.items())))


def test_every_field_mutated_gives_one_line_or_works(base, tmp_path_factory, capsys):
    path, corpus = base
    meta = metadata_of(path)
    work = tmp_path_factory.mktemp("mutations")
    COUNTS["checkpoints"] += 1

    @settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "10")), deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutations(meta))
    def check(mutation):
        place, name, value = mutation
        COUNTS["inputs"] += 1
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        hostile = work / "hostile.safetensors"
        mutate(path, hostile, place, value)
        out = work / "out" / "model.safetensors"
        out.parent.mkdir()
        for argv in (["info", hostile],
                     ["generate", hostile, "--prompt", "abc", "--max-new-tokens", "2", "--seed", "1"],
                     ["train", "--resume", hostile, "--steps", "3", "--out", out],
                     ["train", "--init", hostile, "--corpus", corpus, "--steps", "1", "--batch-size", "2",
                      "--sample-interval", "0", "--out", out]):
            code, err = _run(capsys, argv)
            what = f"{argv[0]} {argv[1] if argv[0] == 'train' else ''} with {'.'.join(map(str, place))} = {name}"
            COUNTS["commands"] += 1
            assert "Traceback" not in err and "internal error" not in err, what + ": " + err
            if code == 0:
                COUNTS["worked"] += 1
                if argv[0] == "train":
                    load_checkpoint(out)  # what was written is a valid checkpoint
                    out.unlink()
            else:
                COUNTS["refused"] += 1
                lines = err.strip().splitlines()
                assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), what + ": " + err
                assert os.listdir(out.parent) == [], what  # nothing written, no temp file left

    check()
    assert COUNTS["refused"] > 0 and COUNTS["worked"] > 0
