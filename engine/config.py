"""Configuration dataclasses: the model's shape and the training run's settings.

Both are plain dataclasses so the GUI can edit them, the CLI can build them from flags and
checkpoints can store them as JSON (`asdict` / `from_dict`).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# Upper bounds keep a typo (or a hostile checkpoint) from allocating terabytes.
MAX_VOCAB_SIZE = 1_000_000
MAX_CONTEXT_LENGTH = 32_768
MAX_EMB_DIM = 16_384
MAX_HEADS = 256
MAX_LAYERS = 256
MAX_HEAD_DIM = 1024
MAX_HIDDEN_DIM = 4 * MAX_EMB_DIM
MAX_ROPE_CONTEXT = 1 << 24  # rotary scalings may name contexts far beyond the one we allocate
# Training settings: generous for real runs, small enough that no value overflows a form or hangs a loop.
MAX_STEPS = 10_000_000
MAX_BATCH_SIZE = 1_000_000
MAX_GRAD_ACCUM = 65_536
MAX_EVAL_BATCHES = 10_000
MAX_EVAL_TOKENS = 10**12
MAX_SAMPLE_TOKENS = 100_000
MAX_SAMPLE_PROMPT_CHARS = 100_000
MAX_INTERVAL = 2**62  # eval / sample interval and warmup: any count of steps
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts


def _short(value: Any) -> str:
    """repr() for an error message, cut short (a hostile value may be huge)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"a {len(str(abs(value)))}-digit number" if abs(value) < 10**4000 else "an enormous number"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def strict_fields(cls: type, data: Any, what: str) -> dict[str, Any]:
    """The keyword arguments of a dataclass read from JSON: a clear ValueError for a non-object or an unknown key
    (a typo in a settings file must not pass silently)."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(sorted(unknown))}")
    return data


ARCHS = ("gpt2", "llama")
ROPE_TYPES = ("linear", "dynamic", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """How a Llama-family model stretches its rotary positions (transformers' `rope_scaling`, same names):

    - linear: every frequency divided by `factor` (positions squeezed together);
    - dynamic: NTK-aware; for a sequence longer than `original_max_position_embeddings` the rotary base grows
      with its length (shorter ones are untouched);
    - llama3: long wavelengths divided by `factor`, short ones kept, a smooth ramp in between, set by
      `low_freq_factor`, `high_freq_factor` and `original_max_position_embeddings` (Llama 3.1+).
    engine/rope.py has the maths.
    """

    rope_type: str
    factor: float
    original_max_position_embeddings: int | None = None  # dynamic and llama3: the context the model trained on
    low_freq_factor: float | None = None  # llama3 only
    high_freq_factor: float | None = None  # llama3 only

    def __post_init__(self) -> None:
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope scaling type must be one of {', '.join(ROPE_TYPES)}, got {self.rope_type!r}")
        _check_number("rope scaling factor", self.factor, 0.0, 1024.0)
        if self.rope_type in ("dynamic", "llama3"):
            _check_int("rope scaling original_max_position_embeddings", self.original_max_position_embeddings,
                       MAX_ROPE_CONTEXT)
        if self.rope_type == "llama3":
            _check_number("rope scaling low_freq_factor", self.low_freq_factor, 0.0, 1024.0)
            _check_number("rope scaling high_freq_factor", self.high_freq_factor, 0.0, 1024.0)
            if not self.high_freq_factor > self.low_freq_factor:
                raise ValueError("rope scaling high_freq_factor must be larger than low_freq_factor")
        elif self.low_freq_factor is not None or self.high_freq_factor is not None:
            raise ValueError(f"{self.rope_type} rope scaling takes no low/high_freq_factor")

    @classmethod
    def from_dict(cls, data: Any) -> RopeScaling:
        return cls(**strict_fields(cls, data, "rope scaling"))


def _check_int(name: str, value: Any, upper: int, lower: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {_short(value)}")
    if not lower <= value <= upper:
        raise ValueError(f"{name} must be between {lower} and {upper:,}, got {_short(value)}")


def _check_number(name: str, value: Any, above: float, upper: float) -> None:
    """A finite number in (above, upper]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{name} must be a number, got {_short(value)}")
    if not above < value <= upper:
        raise ValueError(f"{name} must be above {above:g} and at most {upper:g}, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a GPT, with the names used by GPT-2 and 'Build a LLM from scratch'.

    `arch` is the model family:
    - "gpt2": learned position embeddings, LayerNorm, GELU MLP, one key/value head per query head, biases.
    - "llama" (also Qwen2 and Mistral): rotary positions (rope_theta, rope_scaling), RMSNorm, SwiGLU MLP,
      grouped-query attention (n_kv_heads), no biases except optional q/k/v ones (qkv_bias, as Qwen2).
    n_kv_heads, head_dim and hidden_dim left at None take the family default when the config is made
    (n_heads, emb_dim // n_heads, 4 x emb_dim); checkpoints written before these fields existed read as gpt2.
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    arch: str = "gpt2"
    n_kv_heads: int | None = None  # grouped-query attention: query heads share n_kv_heads key/value heads
    head_dim: int | None = None  # width of each head (Llama-family configs may set it apart from emb_dim)
    hidden_dim: int | None = None  # width of the feed-forward layer (intermediate_size)
    norm_eps: float = 1e-5  # the epsilon of every LayerNorm / RMSNorm
    rope_theta: float = 10000.0  # rotary base (llama family)
    rope_scaling: RopeScaling | None = None  # llama family
    tie_embeddings: bool = True  # the output head reuses the token embedding table

    def __post_init__(self) -> None:
        _check_int("vocab_size", self.vocab_size, MAX_VOCAB_SIZE)
        _check_int("context_length", self.context_length, MAX_CONTEXT_LENGTH)
        _check_int("emb_dim", self.emb_dim, MAX_EMB_DIM)
        _check_int("n_heads", self.n_heads, MAX_HEADS)
        _check_int("n_layers", self.n_layers, MAX_LAYERS)
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        # Derived fields: None means the family default, filled in here (the dataclass is frozen).
        defaults = self._derived_defaults()
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        _check_int("n_kv_heads", self.n_kv_heads, self.n_heads)
        _check_int("head_dim", self.head_dim, MAX_HEAD_DIM)
        _check_int("hidden_dim", self.hidden_dim, MAX_HIDDEN_DIM)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if isinstance(self.drop_rate, bool) or not isinstance(self.drop_rate, (int, float)):
            raise ValueError(f"drop_rate must be a number, got {_short(self.drop_rate)}")
        if not 0.0 <= float(self.drop_rate) < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        for name in ("qkv_bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {_short(getattr(self, name))}")
        _check_number("norm_eps", self.norm_eps, 0.0, 0.1)
        _check_number("rope_theta", self.rope_theta, 0.0, 1e12)
        if isinstance(self.rope_scaling, dict):  # from JSON
            object.__setattr__(self, "rope_scaling", RopeScaling.from_dict(self.rope_scaling))
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise ValueError(f"rope_scaling must be an object or null, got {_short(self.rope_scaling)}")
        if self.arch == "gpt2":
            if self.emb_dim % self.n_heads:
                raise ValueError(f"emb_dim ({self.emb_dim}) must divide evenly among n_heads ({self.n_heads})")
            if self.n_kv_heads != self.n_heads or self.head_dim != self.emb_dim // self.n_heads:
                raise ValueError("a gpt2 model has one key/value head per query head, each emb_dim / n_heads wide")
            if self.rope_scaling is not None:
                raise ValueError("a gpt2 model has learned positions, no rotary embedding to scale")
        elif self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")

    def _derived_defaults(self) -> dict[str, int]:
        return {"n_kv_heads": self.n_heads, "head_dim": self.emb_dim // self.n_heads, "hidden_dim": 4 * self.emb_dim}

    @property
    def rotary(self) -> bool:
        """Positions by rotary embedding (llama family) rather than a learned table (gpt2)."""
        return self.arch == "llama"

    @property
    def kv_groups(self) -> int:
        """How many query heads share each key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count computed from the shape alone (no model needed), tied head counted once.
        non_embedding leaves out the position table (there is none in the llama family)."""
        d, v, t, n, f = self.emb_dim, self.vocab_size, self.context_length, self.n_layers, self.hidden_dim
        q, kv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        head = 0 if self.tie_embeddings else v * d
        if self.arch == "gpt2":
            per_block = (
                2 * 2 * d  # two LayerNorms (weight + bias)
                + 3 * d * d + (3 * d if self.qkv_bias else 0)  # qkv projection
                + d * d + d  # attention output projection
                + d * f + f  # MLP up
                + f * d + d  # MLP down
            )
            total = n * per_block + 2 * d + v * d + t * d + head  # + final LayerNorm, token and position tables
            return total - t * d if non_embedding else total
        per_block = (
            2 * d  # two RMSNorms (weight only)
            + d * (q + 2 * kv) + ((q + 2 * kv) if self.qkv_bias else 0)  # q, k, v projections
            + q * d  # attention output projection
            + 3 * d * f  # SwiGLU: gate, up, down
        )
        return n * per_block + d + v * d + head  # + final RMSNorm, token table, untied head

    def weights_bytes(self, precision: str) -> int:
        """Memory taken by the weights alone in a precision: fp32, bf16, fp16 or int8."""
        return self.num_params() * BYTES_PER_PARAM[precision]

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values; derived fields at their family default are written as None (so a
        hand-edited emb_dim or n_heads carries them along, as with_changes does)."""
        data = asdict(self)
        for name, value in self._derived_defaults().items():
            if data[name] == value:
                data[name] = None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**strict_fields(cls, data, "model config"))

    def with_changes(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again). A derived field (n_kv_heads, head_dim, hidden_dim)
        at its family default stays at the default of the new shape, unless it is changed itself."""
        changes = {k: v for k, v in changes.items() if v is not None}
        for name, value in self._derived_defaults().items():
            if name not in changes and getattr(self, name) == value:
                changes[name] = None
        return replace(self, **changes)


BYTES_PER_PARAM = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}

PRESETS: dict[str, ModelConfig] = {
    # Small enough to learn a synthetic task on a laptop CPU in under a minute.
    "tiny": ModelConfig(vocab_size=256, context_length=128, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.0),
    # nanoGPT's shakespeare-char model.
    "small": ModelConfig(vocab_size=256, context_length=256, emb_dim=384, n_heads=6, n_layers=6, drop_rate=0.2),
    "gpt2-124m": ModelConfig(
        vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12, drop_rate=0.1, qkv_bias=False
    ),
}


def preset(name: str) -> ModelConfig:
    """The preset of that name; vocab_size is replaced by the tokenizer's when training starts."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


@dataclass
class TrainConfig:
    """Settings of one training run (everything but the model shape and the data)."""

    steps: int = 500
    batch_size: int = 16  # sequences per micro-batch (per rank under torchrun)
    grad_accum: int = 1  # micro-batches summed into one optimizer step
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 50
    eval_batches: int = 10  # at most this many batches per split in an automatic evaluation budget
    eval_tokens: int = 0  # tokens per split at each evaluation; 0: automatic (about 10% of the training time)
    sample_interval: int = 100  # 0 disables samples
    sample_tokens: int = 120
    sample_prompt: str = ""
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16
    compile: bool = False

    def __post_init__(self) -> None:
        # Wrong types (e.g. from a hand-edited checkpoint) are a ValueError too, never a TypeError.
        for name, lo, hi in (("steps", 1, MAX_STEPS), ("batch_size", 1, MAX_BATCH_SIZE),
                             ("grad_accum", 1, MAX_GRAD_ACCUM), ("eval_interval", 1, MAX_INTERVAL),
                             ("eval_batches", 1, MAX_EVAL_BATCHES), ("eval_tokens", 0, MAX_EVAL_TOKENS),
                             ("warmup_steps", 0, MAX_INTERVAL),
                             ("sample_interval", 0, MAX_INTERVAL), ("sample_tokens", 0, MAX_SAMPLE_TOKENS),
                             ("seed", *SEED_RANGE)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {_short(value)}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be a whole number between {lo:,} and {hi:,}, got {_short(value)}")
        for name, lo, hi in (("lr", 0.0, 1.0), ("min_lr_ratio", 0.0, 1.0), ("weight_decay", 0.0, 10.0),
                             ("beta1", 0.0, 1.0), ("beta2", 0.0, 1.0), ("grad_clip", 0.0, 1e6)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{name} must be a number, got {_short(value)}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {_short(value)}")
        if not isinstance(self.sample_prompt, str) or len(self.sample_prompt) > MAX_SAMPLE_PROMPT_CHARS:
            raise ValueError(f"sample_prompt must be text of at most {MAX_SAMPLE_PROMPT_CHARS:,} characters")
        if not isinstance(self.compile, bool):
            raise ValueError("compile must be true or false")
        if not (self.beta1 < 1 and self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if not self.lr > 0:
            raise ValueError(f"lr must be in (0, 1], got {self.lr!r}")
        if not isinstance(self.device, str) or not (
                self.device in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:[0-9]{1,4}", self.device)):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {_short(self.device)}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {_short(self.precision)}")

    @property
    def sequences_per_step(self) -> int:
        """Sequences that go into one optimizer step (on one rank)."""
        return self.batch_size * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ValueError("train config must be a JSON object")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
