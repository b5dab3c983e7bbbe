"""Distributed training: `torchrun -m engine train` on 2 CPU processes (gloo), DDP and FSDP.

The runs are real torchrun jobs in subprocesses (`--standalone`, so every job gets a free port), each with a
time limit so a hang fails the test instead of blocking the suite. Models and runs are tiny: the cost is
mostly process start-up.

Why the losses can be compared tightly: a rank's batch is its slice of one global batch drawn from a
generator every rank shares (engine/training/distributed.py), so 2 ranks x batch 2 train on exactly the rows that one
process draws with batch 4 (with 2 micro-batches per step here, so gradient accumulation is covered too).
The only differences are the order of floating-point sums (an all-reduce of two half-batch gradient means
instead of one full-batch mean): ~1e-7 relative per step, measured ≤ 5e-7 on the weights after 6 steps. A
real mistake (ranks training on the same rows, a missing all-reduce, an un-averaged loss, a wrong learning
rate) moves the loss by 1e-2 or more, so 1e-4 separates the two cleanly.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.training import distributed

try:
    from torch.distributed.fsdp import fully_shard  # noqa: F401
    HAS_FSDP2 = True
except ImportError:
    HAS_FSDP2 = False

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
LIMIT_S = 150  # per job: far above a healthy run (~10-25 s on a busy 2-core machine), far below "hung"
TOL = 1e-4

MODEL = ["--preset", "tiny", "--n-layers", "2", "--emb-dim", "64", "--context-length", "32"]
# Warmup longer than the run: the learning rate of step k is then the same whatever --steps is, so a
# 3-step run resumed to 6 steps must equal a straight 6-step run. lr 0.3 x (k+1)/100 makes the loss fall
# (4.47 -> ~3.45) within 6 steps.
RUN = ["--corpus", "python-docs", "--lr", "0.3", "--warmup-steps", "100", "--eval-interval", "6",
       "--sample-interval", "0", "--device", "cpu", "--json"]
DIST = ["--dist-timeout", "60"]  # a stuck collective fails in 60 s, inside LIMIT_S
# The same global batch, 8 sequences per step in 2 micro-batches of 4: one process with batch 4, or two
# with batch 2 each (DDP syncs gradients in the second micro-batch only).
ONE_PROCESS = ["--batch-size", "4", "--grad-accum", "2"]
TWO_RANKS = ["--batch-size", "2", "--grad-accum", "2"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache folder (token cache, peak-FLOPs probe) for every run of this module, never $HOME."""
    return tmp_path_factory.mktemp("cache")


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", LLM_PLAYGROUND_CACHE=str(cache),
               PYTHONUNBUFFERED="1")
    return env


def _torchrun(args: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run a torchrun job; past LIMIT_S stop it (SIGTERM lets torchrun stop its workers) and fail."""
    proc = subprocess.Popen(TORCHRUN + args, cwd=cwd, env=_env(cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish within {LIMIT_S} s (hung?)\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _losses(events: list[dict]) -> tuple[list[float], list[float]]:
    steps = [e["loss"] for e in events if e["event"] == "step"]
    evals = [e["val_loss"] for e in events if e["event"] == "eval"]
    return steps, evals


def _train_here(args: list[str], cache: Path) -> list[dict]:
    """A one-process run through the real CLI, in this process (saves a start-up)."""
    from engine.cli import main

    saved = os.environ.get("LLM_PLAYGROUND_CACHE")
    os.environ["LLM_PLAYGROUND_CACHE"] = str(cache)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            assert main(["train", *args]) == 0
    finally:
        if saved is None:
            os.environ.pop("LLM_PLAYGROUND_CACHE")
        else:
            os.environ["LLM_PLAYGROUND_CACHE"] = saved
    return _events(stdout.getvalue())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> dict:
    """One process, batch 4 x 2 micro-batches: 6 steps straight, and 3 steps saved for resuming."""
    folder = tmp_path_factory.mktemp("reference")
    full = _train_here([*MODEL, *RUN, *ONE_PROCESS, "--steps", "6", "--out", str(folder / "six.safetensors")], cache)
    _train_here([*MODEL, *RUN, *ONE_PROCESS, "--steps", "3", "--out", str(folder / "three.safetensors")], cache)
    return {"events": full, "six": load_checkpoint(folder / "six.safetensors"), "three": folder / "three.safetensors"}


def _assert_close_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for name in sa:
        assert torch.allclose(sa[name], sb[name], atol=TOL, rtol=0), name


def _generate(checkpoint, n: int = 8) -> str:
    """A few sampled tokens by plain forward passes: the loaded model works end to end."""
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    ids = torch.tensor([tokenizer.encode("The ")])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(ids[:, -model.config.context_length:])
            probs = torch.softmax(logits[0, -1], dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)[None]], dim=1)
    return tokenizer.decode(ids[0, 4:].tolist())


def test_ddp_on_two_ranks_matches_one_process_and_saves_one_file(reference, cache, tmp_path):
    out = tmp_path / "ddp.safetensors"
    job = _torchrun(["-m", "engine", "train", *MODEL, *RUN, *DIST, *TWO_RANKS, "--steps", "6",
                     "--out", str(out)], cache, tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]

    events = _events(job.stdout)
    kinds = [e["event"] for e in events]
    assert kinds.count("started") == 1 and kinds.count("checkpoint") == 1  # rank 0 alone prints
    started = events[0]
    assert started["tokens_per_step"] == 8 * 32  # the global batch: 2 per rank x 2 micro-batches x 2 ranks

    steps, evals = _losses(events)
    ref_steps, ref_evals = _losses(reference["events"])
    assert len(steps) == 6 and len(evals) == len(ref_evals) == 2
    assert steps == pytest.approx(ref_steps, abs=TOL)
    assert evals == pytest.approx(ref_evals, abs=TOL)
    assert steps[-1] < steps[0] - 0.3  # it really trained

    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.safetensors"]  # no temp files, one writer
    saved = load_checkpoint(out)
    assert saved.train_state["step"] == 6 and saved.optimizer_state is not None
    _assert_close_weights(saved.model, reference["six"].model)
    assert len(_generate(saved)) > 0


@pytest.mark.skipif(not HAS_FSDP2, reason="this torch has no FSDP2 fully_shard")
def test_fsdp_resumes_exactly_and_saves_a_full_state_dict(reference, cache, tmp_path):
    """3 steps in one process, then 3 more sharded over 2 ranks: the same as 6 steps in one process.
    Covers sharding a checkpoint's optimizer state, FSDP training, and gathering a full state dict."""
    start = tmp_path / "three.safetensors"
    shutil.copy(reference["three"], start)
    out = tmp_path / "fsdp.safetensors"
    job = _torchrun(["-m", "engine", "train", "--resume", str(start), "--fsdp", *DIST, *TWO_RANKS,
                     "--steps", "6", "--sample-interval", "6", "--json", "--out", str(out)], cache, tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]

    events = _events(job.stdout)
    steps, _ = _losses(events)
    ref_steps, _ = _losses(reference["events"])
    assert steps == pytest.approx(ref_steps[3:], abs=TOL)  # and the sample (a gathered copy) changed nothing
    samples = [e for e in events if e["event"] == "sample"]
    assert [e["step"] for e in samples] == [6] and samples[0]["text"]

    assert sorted(p.name for p in tmp_path.iterdir()) == ["fsdp.safetensors", "three.safetensors"]
    saved = load_checkpoint(out)
    ref = reference["six"]
    assert saved.train_state["step"] == 6
    _assert_close_weights(saved.model, ref.model)
    assert saved.model.head.weight is saved.model.tok_emb.weight  # plain GPT, tied as usual
    # The optimizer state was gathered whole and keyed by the plain parameter names.
    assert set(saved.optimizer_state["state"]) == set(ref.optimizer_state["state"])
    for name, entries in ref.optimizer_state["state"].items():
        for key, value in entries.items():
            assert torch.allclose(saved.optimizer_state["state"][name][key], value, atol=TOL, rtol=1e-3), name
    assert len(_generate(saved)) > 0


@pytest.mark.skipif(not HAS_FSDP2, reason="this torch has no FSDP2 fully_shard")
def test_fsdp_fine_tunes_a_llama_family_model_as_one_process(cache, tmp_path):
    """--init from a llama-family checkpoint (grouped-query attention, rotary positions, RMSNorm, SwiGLU, q/k/v
    biases, an untied head, a tokenizer.json tokenizer): FSDP shards its blocks over 2 ranks and trains exactly
    as one process does."""
    from hf_fixtures import bytelevel_json

    from engine.checkpoint import save_checkpoint
    from engine.config import ModelConfig
    from engine.model import GPT
    from engine.tokenizers.hf import HFTokenizer

    tokenizer = HFTokenizer(bytelevel_json(), name="hf:chatml")
    config = ModelConfig(arch="llama", vocab_size=448, context_length=32, emb_dim=64, n_heads=4, n_kv_heads=2,
                         n_layers=2, hidden_dim=96, drop_rate=0.0, qkv_bias=True, tie_embeddings=False)
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "llama.safetensors", GPT(config), tokenizer)
    run = ["--init", str(start), *RUN, "--lr", "0.01", "--steps", "3", "--eval-interval", "3"]
    one = tmp_path / "one" / "one.safetensors"
    one.parent.mkdir()
    ref_steps, _ = _losses(_train_here([*run, *ONE_PROCESS, "--out", str(one)], cache))

    out = tmp_path / "fsdp" / "fsdp.safetensors"
    out.parent.mkdir()
    job = _torchrun(["-m", "engine", "train", *run, "--fsdp", *DIST, *TWO_RANKS, "--out", str(out)], cache, tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    steps, _ = _losses(_events(job.stdout))
    assert len(steps) == 3 and steps == pytest.approx(ref_steps, abs=TOL)
    saved, reference = load_checkpoint(out), load_checkpoint(one)
    assert saved.config == config and saved.model.head.weight is not saved.model.tok_emb.weight
    _assert_close_weights(saved.model, reference.model)


FAILING_JOB = textwrap.dedent("""
    import sys, time
    import torch
    from engine.training import distributed

    def train(ctx):
        if ctx.rank == 1:
            if sys.argv[1] == "crash":
                raise ValueError("rank 1 could not read its data")
            time.sleep(600)  # stuck
        ctx.mean_and_any(torch.ones(()), False)  # rank 0 waits for rank 1 here
        return 0

    try:
        sys.exit(distributed.run(train, device="cpu", timeout_s=3))
    except (ValueError, OSError) as e:  # what engine.cli does with errors: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
""")


@pytest.mark.parametrize("mode, message", [
    ("hang", "rank 0: no answer from the other processes within 3 s"),
    ("crash", "error: rank 1 could not read its data"),
])
def test_a_failing_rank_ends_the_whole_job(mode, message, cache, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(FAILING_JOB)
    job = _torchrun([str(script), mode], cache, tmp_path)  # fails the test if the job hangs
    assert job.returncode != 0
    assert message in job.stderr


def test_rank_batches_are_slices_of_one_global_batch():
    from engine.data import Dataset, load_corpus
    from engine.tokenizers import get_tokenizer

    corpus = load_corpus("copy")
    dataset = Dataset.build(corpus, get_tokenizer("char", corpus.text()), 16)
    whole = dataset.get_batch("train", 6, 16, torch.Generator().manual_seed(5))
    parts = [distributed.RankBatches(dataset, r, 3).get_batch("train", 2, 16, torch.Generator().manual_seed(5))
             for r in range(3)]
    for i in (0, 1):  # x, then y
        assert torch.equal(torch.cat([p[i] for p in parts]), whole[i])
    assert not torch.equal(parts[0][0], parts[1][0])  # ranks train on different rows
    assert distributed.RankBatches(dataset, 0, 3).corpus is corpus  # the rest is the dataset's own


def test_outside_torchrun(monkeypatch, tmp_path, capsys):
    from engine.cli import main

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun()
    assert distributed.launched_by_torchrun({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert distributed.world_size() == 1 and distributed.is_main_process()
    with pytest.raises(distributed.DistributedError, match="torchrun"):
        distributed.setup("cpu")
    out = tmp_path / "m.safetensors"
    assert main(["train", "--preset", "tiny", "--corpus", "copy", "--steps", "1", "--fsdp", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --fsdp") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_device_choice_under_torchrun():
    assert distributed._pick_device("cpu", 3) == torch.device("cpu")
    with pytest.raises(distributed.DistributedError, match="not on MPS"):
        distributed._pick_device("mps", 0)
    if not torch.cuda.is_available():
        with pytest.raises(distributed.DistributedError, match="no CUDA GPU"):
            distributed._pick_device("cuda", 0)
        assert distributed._pick_device("auto", 0) == torch.device("cpu")


# ---------------------------------------------------------------- the app's "Export command"

def _split_export(command: str) -> tuple[list[str], list[str]]:
    words = shlex.split(command)
    assert words[0] == "torchrun"
    at = words.index("-m")
    assert words[at + 1:at + 3] == ["engine", "train"]
    return words[1:at], words[at + 2:]


def test_exported_torchrun_command_runs_our_cli(tmp_path):
    """The Training tab's command line (app/tabs/training/torchrun.py) parses with torchrun's parser and ours, and gives
    back the form's model and training settings."""
    export = pytest.importorskip("app.tabs.training.torchrun")
    from torch.distributed.run import get_args_parser

    from engine.cli import build_parser
    from engine.cli.train import _run_spec
    from engine.config import TrainConfig, preset

    model = preset("tiny").with_changes(n_layers=3, emb_dim=96, n_heads=4, drop_rate=0.05, qkv_bias=True)
    train = TrainConfig(steps=40, batch_size=6, grad_accum=2, lr=3e-4, warmup_steps=5, eval_interval=10,
                        seed=7, device="cuda:1", precision="bf16", compile=True)
    out = tmp_path / "run model.safetensors"  # a space: the line must quote it
    launches = [export.Launch(nproc_per_node=8),
                export.Launch(nproc_per_node=4, nnodes=2, rdzv_endpoint="node1.example:29500", fsdp=True)]
    for launch in launches:
        command = export.torchrun_command(model, train, corpus="copy", tokenizer="char", out=str(out),
                                          launch=launch)
        torchrun_words, engine_words = _split_export(command)
        tr = get_args_parser().parse_args([*torchrun_words, "-m", "engine"])
        assert int(tr.nproc_per_node) == launch.nproc_per_node
        if launch.nnodes > 1:
            assert tr.nnodes == "2" and tr.rdzv_backend == "c10d" and tr.rdzv_endpoint == launch.rdzv_endpoint
        else:
            assert tr.standalone

        args = build_parser().parse_args(engine_words)
        assert args.fsdp == launch.fsdp and args.out == str(out)
        _, spec = _run_spec(args)  # what prepare_run builds the run from (vocab_size then follows the tokenizer)
        got_train = spec.train_config
        assert spec.model_config == model.with_changes(vocab_size=preset("tiny").vocab_size)
        assert spec.tokenizer == "char" and spec.corpus == "copy"
        for field in ("steps", "batch_size", "grad_accum", "lr", "warmup_steps", "eval_interval", "seed",
                      "precision", "compile"):
            assert getattr(got_train, field) == getattr(train, field), field
        assert got_train.device == "cuda"  # each rank takes its own GPU: no index in the command
