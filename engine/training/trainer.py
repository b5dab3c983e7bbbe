"""The training loop as a generator of events.

`Trainer.run()` yields a `StepEvent` after every optimizer step (and evaluation, sample and attention
events in between), so the GUI, the command line and the tests all drive the same loop and can pause or
stop it between steps. It never calls back into whoever runs it.

Each step: set the learning rate (linear warmup, then cosine to lr * min_lr_ratio), run `grad_accum`
micro-batches forward and backward under autocast, clip the gradient norm, and apply AdamW. The loss and
gradient norm are read back together (one device sync per step) and checked *before* the update, so a
non-finite step is never applied and the model keeps the weights of the last good step.

Evaluation is sized by cost, not by a fixed count of batches: by default each evaluation reads
ceil(0.15 x eval_interval x grad_accum) batches per split (at most eval_batches), so its forward passes
(a third of a training step's work per token, over two splits) cost about 10% of the training between two
evaluations; `eval_tokens` sets the tokens per split instead. The evaluation before the first step is
made only when it is cheap (engine/training/budget.py). Stop (`request_stop`) is honoured inside a micro-batch:
hooks on the transformer blocks check it in the forward and backward pass of every block (and evaluations
and samples check it between batches and tokens), so a 124M model on a laptop CPU stops within a block's
work, not a 10-second step. The run ends at once, with no last evaluation or sample, and keeps the
weights of its last complete step (the dropped step's random draws are rewound).

One file (a little over 500 lines) for the loop and what it yields between steps (evaluations, samples,
probes): they share the trainer's model, state and random streams. The evaluation budget and the stop hooks
live in budget.py and stopping.py.

Reproducibility: batches come from a torch.Generator seeded from `seed`; dropout uses torch's global
RNG; evaluation and samples use generators of their own so they never shift the training stream. All
these states go into `state()`, so N steps + save + resume N steps equals 2N steps on a CPU, bit for bit.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from engine.checkpoint import Checkpoint, load_optimizer_state, save_checkpoint
from engine.config import ModelConfig, TrainConfig
from engine.data import Corpus, Dataset
from engine.device import autocast_context, check_precision, device_name, enable_fast_math, peak_flops, pick_device
from engine.events import (
    AttentionProbeEvent,
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    FinishedEvent,
    ProgressEvent,
    SampleEvent,
    StartedEvent,
    StepEvent,
)
from engine.generation.attention import attention_maps
from engine.generation.sampling import MAX_NEW_TOKENS, SamplingConfig
from engine.generation.stream import GenerationDoneEvent, NotFiniteError, generate, stream_generate
from engine.inspect import embedding_map, token_losses
from engine.memory import OOM_HINT, OutOfMemory, check_training_memory, is_out_of_memory, out_of_memory_message
from engine.model import GPT
from engine.tokenizers import Tokenizer
from engine.train_state import HISTORY_KEYS, empty_history, rng_from_str, rng_to_str
from engine.training.budget import eval_batches_per_split, first_eval_is_cheap
from engine.training.distributed import DistContext
from engine.training.stopping import StopRequested, stop_hooks

PROBE_TOKENS = 48  # attention over training: maps of at most this many tokens (48 x 48 per head stays readable)
HELDOUT_PROBE_TOKENS = 128  # token losses over training: this many tokens from the start of the validation split
EMBEDDING_MAP_MAX_VOCAB = 8192  # embedding maps over training only up to this vocabulary (V x 2 floats per probe)
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 40
NOT_FINITE_SAMPLE = "[no sample: the model's outputs are not finite numbers]"


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for the update that follows `step` completed steps: warmup, then cosine."""
    min_lr = config.lr * config.min_lr_ratio
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - min_lr)


def _finite_or_none(values: list) -> list:
    """History values for JSON: a non-finite one (a diverged evaluation) becomes null, not NaN / Infinity."""
    return [v if not isinstance(v, float) or math.isfinite(v) else None for v in values]


def text_probe_ids(tokenizer: Tokenizer, text: str, context_length: int) -> list[int]:
    """The probe's token ids: the first PROBE_TOKENS tokens of a text (at most the context)."""
    return list(tokenizer.encode(text))[:min(PROBE_TOKENS, context_length)]


def corpus_probe_ids(corpus: Corpus, tokenizer: Tokenizer, context_length: int) -> list[int]:
    """The probe of a run on a corpus: the first tokens of its sample passage."""
    return text_probe_ids(tokenizer, corpus.sample_passage(), context_length)


class Trainer:
    """Trains a GPT on a Dataset, yielding events; see the module docstring.

    model: start from these weights (fine-tuning); its config wins over `model_config`.
    resume: a Checkpoint (or a dict with "train_state" and "optimizer_state") to continue exactly;
        when `model` is None its model is used.
    probe_text: if given, the attention maps of its first tokens (`text_probe_ids`) are sent at every evaluation,
        with the token losses of a held-out slice and the embedding map (see AttentionProbeEvent).
    probe_ids: the probe as token ids instead (e.g. `corpus_probe_ids`), cut the same way.
    tokenizer_spec: how the tokenizer was asked for (e.g. "char", "bpe:512"), kept in the state.
    """

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, dataset: Dataset, *,
                 model: GPT | None = None, resume: Checkpoint | dict | None = None,
                 probe_text: str | None = None, probe_ids: Sequence[int] | None = None,
                 tokenizer_spec: str | None = None, dist: DistContext | None = None):
        self.train_config = train_config
        self.dataset = dataset
        self.dist = dist  # under torchrun (engine/training/distributed.py): this rank's place in the job
        if dist is not None:  # this rank's slice of each global batch
            self.dataset = dist.shard_dataset(dataset)
        self.tokenizer = dataset.tokenizer
        self.tokenizer_spec = tokenizer_spec or self.tokenizer.name
        self.device = pick_device(train_config.device)
        if dist is not None:  # each process has its own GPU (LOCAL_RANK) or the CPU
            dist.check(train_config)
            self.device = dist.device
        check_precision(train_config.precision, self.device)
        enable_fast_math(self.device)

        resume_state, resume_optimizer = None, None
        if resume is not None:
            if isinstance(resume, dict):
                resume_state, resume_optimizer = resume.get("train_state"), resume.get("optimizer_state")
                model = model if model is not None else resume.get("model")
            else:
                resume_state, resume_optimizer = resume.train_state, resume.optimizer_state
                model = model if model is not None else resume.model
            if not resume_state:
                raise ValueError("this checkpoint has no training state to resume from")

        config = model.config if model is not None else model_config
        if config.vocab_size < self.tokenizer.vocab_size:
            raise ValueError(f"the model's vocab_size ({config.vocab_size:,}) is smaller than the "
                             f"tokenizer's ({self.tokenizer.vocab_size:,})")
        dataset.check_fits(config.context_length)
        # Before anything big is allocated: a run that cannot fit is refused with what would fit.
        check_training_memory(config, train_config, self.device)
        if resume_state is None:
            torch.manual_seed(train_config.seed)  # the model's init and dropout (resume restores it below)
        try:
            if model is None:
                model = GPT(model_config)
            self.model: GPT = model.to(self.device)
            if dist is not None:  # FSDP shards in place, before the optimizer sees the parameters
                self.model = dist.shard(self.model)
            self.optimizer = self.model.configure_optimizer(
                train_config.lr, train_config.weight_decay, (train_config.beta1, train_config.beta2),
                self.device.type)
        except (MemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            raise OutOfMemory(out_of_memory_message(e, "building the model")) from None
        self.config = self.model.config
        self.scaler = torch.amp.GradScaler("cuda") if train_config.precision == "fp16" and \
            self.device.type == "cuda" else None
        self._forward = torch.compile(self.model) if train_config.compile else self.model
        if dist is not None:  # training forward passes go through DDP
            self._forward = dist.wrap(self._forward)

        self.batch_generator = torch.Generator().manual_seed(train_config.seed)
        self.step = 0
        self.history = empty_history()
        self.elapsed_before = 0.0  # training seconds of earlier sessions (resume)
        if dist is not None and resume_optimizer is not None:
            resume_optimizer = dist.shard_optimizer_state(resume_optimizer, self.model)
        if resume_state:
            self._restore(resume_state, resume_optimizer)

        context = self.config.context_length
        self.tokens_per_step = train_config.batch_size * train_config.grad_accum * context
        if dist is not None:  # batch_size is per rank: count the global batch
            self.tokens_per_step *= dist.world_size
        if probe_ids is None and probe_text:
            probe_ids = text_probe_ids(self.tokenizer, probe_text, context)
        self.probe_ids: list[int] = [int(i) for i in probe_ids or ()][:min(PROBE_TOKENS, context)]
        if any(not 0 <= i < self.config.vocab_size for i in self.probe_ids):
            raise ValueError(f"probe token ids must be between 0 and {self.config.vocab_size - 1}")
        # the held-out slice whose token losses the probes record: the validation split is never trained on
        self.heldout_ids: list[int] = [int(i) for i in dataset.val_ids[:min(HELDOUT_PROBE_TOKENS, context)]] \
            if self.probe_ids else []
        self._map_axes: np.ndarray | None = None  # the last probe's embedding-map axes (keeps their signs)
        self._stop = False
        self._peak: float | None = None

    # ------------------------------------------------------------ state

    def _restore(self, state: dict[str, Any], optimizer_state: dict[str, Any] | None) -> None:
        try:
            self.step = int(state.get("step", 0))
            history = state.get("history") or {}
            self.history = {k: list(history.get(k, [])) for k in HISTORY_KEYS}
            self.elapsed_before = float(state.get("elapsed_s", 0.0))
            rng = state.get("rng") or {}
            if "torch" in rng:
                torch.set_rng_state(rng_from_str(rng["torch"]))
            if "batch" in rng:
                self.batch_generator.set_state(rng_from_str(rng["batch"]))
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng_from_str(rng["cuda"]), self.device)
        except (AttributeError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"the saved training state is unusable: {e}") from None
        if optimizer_state is not None:
            load_optimizer_state(self.optimizer, self.model, optimizer_state)

    def state(self) -> dict[str, Any]:
        """JSON-able training state: enough, with weights and optimizer, to resume exactly."""
        rng = {"torch": rng_to_str(torch.get_rng_state()), "batch": rng_to_str(self.batch_generator.get_state())}
        if self.device.type == "cuda":
            rng["cuda"] = rng_to_str(torch.cuda.get_rng_state(self.device))
        return {
            "step": self.step,
            "train_config": asdict(self.train_config),
            "corpus": self.dataset.corpus.source or self.dataset.corpus.name,
            "corpus_name": self.dataset.corpus.name,
            "tokenizer_spec": self.tokenizer_spec,
            "elapsed_s": self.elapsed_before + getattr(self, "_elapsed", 0.0),
            "history": {k: _finite_or_none(v) for k, v in self.history.items()},
            "rng": rng,
        }

    def save(self, path, *, include_optimizer: bool = True) -> CheckpointEvent:
        """Save weights, tokenizer, training state and (by default) optimizer state, atomically."""
        if self.dist is not None:  # every rank calls this (FSDP gathers the shards); rank 0 alone writes
            self.dist.save_checkpoint(path, self.model, self.tokenizer, train_state=self.state(),
                                      optimizer=self.optimizer if include_optimizer else None)
            return CheckpointEvent(step=self.step, path=str(path))
        save_checkpoint(path, self.model, self.tokenizer, train_state=self.state(),
                        optimizer=self.optimizer if include_optimizer else None)
        return CheckpointEvent(step=self.step, path=str(path))

    def request_stop(self) -> None:
        """End as soon as the current micro-batch (or evaluation batch, or sampled token) is done, with no
        last evaluation or sample, and yield FinishedEvent('stopped'). Safe to call from another thread."""
        self._stop = True

    def _stop_hooks(self) -> contextlib.AbstractContextManager:
        """While a run or evaluation goes on, every block checks for a stop in its forward and backward pass
        (see engine/training/stopping.py). Not under torchrun, where the ranks stop at step boundaries
        together, nor compiled, where the hook would break the graph."""
        if self.dist is not None or self.train_config.compile:
            return contextlib.nullcontext()
        return stop_hooks(self.model.blocks, lambda: self._stop)

    def _stopping(self) -> bool:
        """A stop to honour inside an evaluation or sample. Under torchrun the ranks agree on stopping at
        step boundaries only (every rank must join the same collectives), so there it waits for the step."""
        return self._stop and self.dist is None

    @property
    def eval_batches(self) -> int:
        """Batches per split at each evaluation (see eval_batches_per_split)."""
        return eval_batches_per_split(self.train_config, self.config.context_length)

    def first_eval_is_cheap(self) -> bool:
        """Whether the evaluation before any step is cheap enough to make (see first_eval_is_cheap)."""
        return first_eval_is_cheap(self.model.flops_per_token(), self.eval_batches, self.train_config.batch_size,
                                   self.config.context_length)

    # ------------------------------------------------------------ the loop

    def run(self) -> Iterator[Event]:
        cfg = self.train_config
        model = self.model
        yield StartedEvent(total_steps=cfg.steps, start_step=self.step, num_params=model.num_params(),
                           device=device_name(self.device), precision=cfg.precision,
                           tokens_per_step=self.tokens_per_step, model_config=self.config.to_dict(),
                           train_config=asdict(cfg))
        if self._peak is None:
            self._peak = peak_flops(self.device, cfg.precision)
            if self.dist is not None:  # the job's peak: one device per rank
                self._peak *= self.dist.world_size
        flops_per_step = model.flops_per_token() * self.tokens_per_step
        t_start = time.perf_counter()
        step_times: list[float] = []
        self._elapsed = 0.0
        hooks = self._stop_hooks()  # entered here, left in the finally below (a with block would nest it all)
        hooks.__enter__()
        try:
            if (not self.history["val_step"] or self.history["val_step"][-1] != self.step) \
                    and self.first_eval_is_cheap() and not self._stopping():
                yield from self._evaluate_and_sample(force_sample=self.step == 0)
            while self.step < cfg.steps and not self._stop:
                t0 = time.perf_counter()
                result = self._train_step(lr_at(self.step, cfg))
                if result is None:  # stopped between micro-batches: the step was dropped
                    break
                loss, grad_norm = result
                if not (math.isfinite(loss) and (math.isfinite(grad_norm) or self.scaler is not None)):
                    self.optimizer.zero_grad(set_to_none=True)
                    what = "loss" if not math.isfinite(loss) else "gradient norm"
                    yield ErrorEvent(step=self.step, message=f"training stopped at step {self.step + 1}: the "
                                     f"{what} became {loss if what == 'loss' else grad_norm}; the model keeps "
                                     f"the weights of step {self.step}",
                                     hint="lower the learning rate, raise warmup, or use fp32")
                    return
                self.step += 1
                dt = time.perf_counter() - t0
                step_times.append(dt)
                self._elapsed = time.perf_counter() - t_start
                recent = step_times[-20:]
                tokens_per_s = self.tokens_per_step * len(recent) / sum(recent)
                achieved = flops_per_step * len(recent) / sum(recent)
                if self._peak and achieved > self._peak:  # the cached peak was probed under load: again
                    world = self.dist.world_size if self.dist is not None else 1
                    self._peak = peak_flops(self.device, cfg.precision, at_least=achieved / world) * world
                mfu = min(1.0, achieved / self._peak) if self._peak else 0.0
                eta = (cfg.steps - self.step) * sum(recent) / len(recent)
                lr = self.optimizer.param_groups[0]["lr"]
                tokens_seen = self.step * self.tokens_per_step
                self._record(step=self.step, loss=loss, lr=lr, tokens_seen=tokens_seen, tokens_per_s=tokens_per_s)
                yield StepEvent(step=self.step, total_steps=cfg.steps, loss=loss, lr=lr, grad_norm=grad_norm,
                                tokens_seen=tokens_seen, tokens_per_s=tokens_per_s, mfu=mfu,
                                elapsed_s=self.elapsed_before + self._elapsed, eta_s=eta)
                if (self.step % cfg.eval_interval == 0 or self.step == cfg.steps) and not self._stopping():
                    yield from self._evaluate_and_sample()
            self._elapsed = time.perf_counter() - t_start
            yield FinishedEvent(step=self.step, reason="stopped" if self.step < cfg.steps else "completed",
                                final_loss=self.history["loss"][-1] if self.history["loss"] else None,
                                final_val_loss=self.history["val_loss"][-1] if self.history["val_loss"] else None)
        except (MemoryError, RuntimeError) as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(e):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            where = "GPU memory" if isinstance(e, torch.cuda.OutOfMemoryError) else "memory"
            yield ErrorEvent(step=self.step, message=f"out of {where} at step {self.step + 1}; the model keeps "
                             f"the weights of step {self.step}", hint=OOM_HINT)
        finally:
            self._elapsed = time.perf_counter() - t_start
            self.elapsed_before += self._elapsed
            self._elapsed = 0.0
            self._stop = False  # a stop asked before the run began still counts; after it, a new run goes on
            hooks.__exit__(None, None, None)
            self.model.eval()

    def _train_step(self, lr: float) -> tuple[float, float] | None:
        """One optimizer step over grad_accum micro-batches; returns (mean loss, grad norm) floats, or None
        when a stop came during the step (it is dropped: no update, and the random states go back to where
        the step began, so a resumed run draws what this step would have drawn).

        The update is skipped when either is non-finite (the caller reports it)."""
        cfg = self.train_config
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        if self.dist is not None:
            self.dist.seed_dropout(cfg.seed, self.step)
        # Under torchrun the ranks must run the same micro-batches (DDP's all-reduce): stops wait for the step.
        rewind = self._random_states() if self.dist is None else None
        try:
            total = self._accumulate()
        except StopRequested:
            total = None
        if total is None:  # stopped inside the step: drop it
            self.optimizer.zero_grad(set_to_none=True)
            self._set_random_states(rewind)
            return None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if self.dist is not None:  # the loss averaged over ranks; a stop asked on any rank stops them all
            grad_norm = self.dist.full(grad_norm)
            total, self._stop = self.dist.mean_and_any(total, self._stop)
        # The one CPU-device sync point of the step: read loss and grad norm together.
        loss_value, norm_value = torch.stack([total.float(), grad_norm.float()]).tolist()
        if math.isfinite(loss_value) and (math.isfinite(norm_value) or self.scaler is not None):
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, norm_value

    def _accumulate(self) -> torch.Tensor | None:
        """Forward and backward over grad_accum micro-batches; the summed (scaled) loss, or None when a stop
        came between two micro-batches."""
        cfg = self.train_config
        total = None
        for micro in range(cfg.grad_accum):
            if micro and self._stopping():
                return None
            if self.dist is not None:  # DDP: all-reduce gradients once, in the last micro-batch's backward
                self.dist.set_grad_sync(self._forward, micro == cfg.grad_accum - 1)
            x, y = self.dataset.get_batch("train", cfg.batch_size, self.config.context_length,
                                          self.batch_generator, self.device)
            with autocast_context(self.device, cfg.precision):
                _, loss = self._forward(x, y)
            loss = loss / cfg.grad_accum
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        return total

    def _random_states(self) -> tuple[torch.Tensor, ...]:
        states = (torch.get_rng_state(), self.batch_generator.get_state())
        if self.device.type == "cuda":
            states += (torch.cuda.get_rng_state(self.device),)
        return states

    def _set_random_states(self, states: tuple[torch.Tensor, ...] | None) -> None:
        """Rewind to `_random_states()`: a dropped step leaves the random streams where the step began."""
        if states is None:
            return
        torch.set_rng_state(states[0])
        self.batch_generator.set_state(states[1])
        if len(states) > 2:
            torch.cuda.set_rng_state(states[2], self.device)

    def _record(self, **values: float) -> None:
        for key, value in values.items():
            self.history[key].append(value)

    # ------------------------------------------------------------ evaluation, samples, probes

    def _eval_batches(self, split: str) -> Iterator[torch.Tensor]:
        """Losses (device tensors, no sync) of one evaluation's batches: the same batches at every
        evaluation, so the curve compares like with like."""
        cfg = self.train_config
        generator = torch.Generator().manual_seed(cfg.seed + (1 if split == "val" else 2))
        self.model.eval()
        for _ in range(self.eval_batches):
            x, y = self.dataset.get_batch(split, cfg.batch_size, self.config.context_length, generator, self.device)
            with torch.no_grad(), autocast_context(self.device, cfg.precision):
                _, loss = self.model(x, y)
            yield loss.float()

    def estimate_loss(self, split: str) -> float:
        """Mean loss over one evaluation's batches of a split ("train" or "val")."""
        return torch.stack(list(self._eval_batches(split))).mean().item()

    def evaluate(self) -> Iterator[Event]:
        """Evaluate (and sample, and probe) now, e.g. after a stopped run; stoppable like the run."""
        try:
            with self._stop_hooks():
                yield from self._evaluate_and_sample(force_sample=True)
        finally:
            self._stop = False
            self.model.eval()

    def _evaluate_and_sample(self, force_sample: bool = False) -> Iterator[Event]:
        """Validation and training loss (then the probe and a sample); a stop ends it at once, recording
        nothing more."""
        try:
            yield from self._evaluate_and_sample_unguarded(force_sample)
        except StopRequested:  # from a block's hook, inside an evaluation batch, the probe or the sample
            pass

    def _evaluate_and_sample_unguarded(self, force_sample: bool) -> Iterator[Event]:
        cfg = self.train_config
        means = {}
        done, total = 0, 2 * self.eval_batches
        for split in ("val", "train"):
            losses = []
            for loss in self._eval_batches(split):
                losses.append(loss)
                done += 1
                # A yield per batch keeps a long evaluation pausable and stoppable.
                yield ProgressEvent(job="eval", done=done, total=total, message=f"evaluating at step {self.step}")
                if self._stopping():
                    return
            means[split] = torch.stack(losses).mean()
        if self.dist is not None:  # each rank evaluated its slice of the same batches
            means = self.dist.mean_values(means)
        val_loss, train_loss = torch.stack([means["val"], means["train"]]).tolist()
        tokens_seen = self.step * self.tokens_per_step
        self._record(val_step=self.step, val_loss=val_loss, val_tokens_seen=tokens_seen)
        yield EvalEvent(step=self.step, val_loss=val_loss, train_loss=train_loss, tokens_seen=tokens_seen)
        if self._stopping():
            return
        if self.probe_ids:
            yield self.attention_probe()
        if cfg.sample_interval and cfg.sample_tokens and not self._stopping() and (
                force_sample or self.step % cfg.sample_interval == 0 or self.step == cfg.steps):
            prompt = cfg.sample_prompt
            text = self._sample_unless_stopped(prompt, cfg.sample_tokens)
            if text is not None:
                yield SampleEvent(step=self.step, prompt=prompt, text=text)

    def _inference_model(self) -> GPT:
        """The model as engine.generation reads it: the trained module itself, or under FSDP (where each
        rank holds a shard) a full copy gathered on every rank."""
        if self.dist is not None and self.dist.fsdp:
            return self.dist.full_model(self.model)
        return self.model

    def attention_probe(self) -> AttentionProbeEvent:
        """The probe's attention maps now, the held-out slice's token losses and the embedding map, through
        the engine's inference forward."""
        model = self._inference_model()
        maps = attention_maps(model, self.probe_ids)  # (n_layers, n_heads, T, T)
        tokens = tuple(self.tokenizer.render_token(i) for i in self.probe_ids)
        heldout_loss = token_losses(model, self.heldout_ids) if self.heldout_ids else None
        points = None
        if self.config.vocab_size <= EMBEDDING_MAP_MAX_VOCAB:
            embeddings = embedding_map(model, reference=self._map_axes)
            self._map_axes, points = embeddings.axes, embeddings.points
        return AttentionProbeEvent(step=self.step, tokens=tokens, maps=maps,
                                   heldout_tokens=tuple(self.tokenizer.render_token(i) for i in self.heldout_ids),
                                   heldout_loss=heldout_loss, embedding_points=points)

    def _sample_unless_stopped(self, prompt: str, max_new_tokens: int) -> str | None:
        """`sample`, token by token, giving up (None) as soon as a stop is asked (on one process)."""
        try:
            for event in stream_generate(self._inference_model(), self.tokenizer, prompt,
                                         [self._sample_config(max_new_tokens)], compile=False):
                if isinstance(event, GenerationDoneEvent):
                    return event.texts[0]
                if self._stopping():
                    return None
        except NotFiniteError:
            return NOT_FINITE_SAMPLE
        return None

    def _sample_config(self, max_new_tokens: int) -> SamplingConfig:
        return SamplingConfig(temperature=SAMPLE_TEMPERATURE, top_k=SAMPLE_TOP_K,
                              max_new_tokens=min(max_new_tokens, MAX_NEW_TOKENS),
                              seed=self.train_config.seed % 2**63)

    def sample(self, prompt: str, max_new_tokens: int) -> str:
        """A continuation drawn by the engine's own generate (its prompt and sliding-window rules) at
        temperature 0.8, top-k 40, with the run's seed: samples at different steps differ only because
        the model changed, and the draws use a generator of their own, so training randomness is untouched."""
        config = self._sample_config(max_new_tokens)
        # Eager even on CUDA: the weights change between samples, and a short sample gains nothing from
        # capturing a CUDA graph it would re-record next time (nor from a first compile mid-run).
        try:
            return generate(self._inference_model(), self.tokenizer, prompt, config, compile=False).text
        except NotFiniteError:  # weights that overflow: the loss reports it; the sample only says so
            return NOT_FINITE_SAMPLE
