"""LLM Playground's engine: a PyTorch library with no Qt in it, driven the same way by the app, the
command line (`python -m engine`) and the tests.

`__all__` below is the public API: what the app imports (it imports nothing else from the engine) and
what users' scripts may rely on. `engine.config`, `engine.model` and `engine.sampling` stay importable
as modules too.
"""
from engine.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info, save_checkpoint
from engine.cli.train import closest_preset, train_command
from engine.config import (
                           BYTES_PER_PARAM,
                           MAX_CONTEXT_LENGTH,
                           MAX_EMB_DIM,
                           MAX_HEADS,
                           MAX_LAYERS,
                           MAX_VOCAB_SIZE,
                           PRESETS,
                           ModelConfig,
                           TrainConfig,
                           preset,
)
from engine.data import (
                           BUILTIN_CORPORA,
                           Corpus,
                           CorpusError,
                           Dataset,
                           corpus_names,
                           is_synthetic,
                           load_corpus,
                           load_corpus_job,
)
from engine.device import (
                           INFERENCE_PRECISIONS,
                           TRAINING_PRECISIONS,
                           available_devices,
                           check_precision,
                           device_name,
                           pick_device,
                           precision_options,
                           precision_problem,
                           preferred_training_precision,
)
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
                           run_job,
)
from engine.files import atomic_write_text, read_regular
from engine.generation import (
                           Ablation,
                           AblationMeans,
                           ForwardOptions,
                           ForwardOutput,
                           GenerationDoneEvent,
                           GenerationStepEvent,
                           attention_maps,
                           attention_rollout,
                           decoder_for,
                           filter_stages,
                           next_token_probs,
                           prompt_token_ids,
                           stop_token_ids,
                           stream_generate,
                           weights_memory_bytes,
                           window_length,
)
from engine.generation.sampling import SamplingConfig
from engine.hf_import import HFImportError, import_hf_folder
from engine.hub import DownloadCancelled, HubDownloadProgress, HubError, download_model_job
from engine.inspect import (
                           GRADIENT_X_INPUT,
                           INTEGRATED_GRADIENTS,
                           AblationEffect,
                           Attribution,
                           EmbeddingMap,
                           HeadSweep,
                           LogitLens,
                           embedding_map,
                           make_ablation,
                           perplexity,
                           run_ablation,
                           run_attribution,
                           run_head_sweep,
                           run_logit_lens,
                           token_losses,
)
from engine.memory import (
                           available_memory_bytes,
                           training_memory_bytes,
                           training_memory_parts,
                           training_memory_problem,
)
from engine.model import GPT
from engine.sources import (
                           ModelEntry,
                           ModelSource,
                           OpenedModel,
                           SourceError,
                           list_models,
                           open_model,
                           open_model_job,
                           resolve_source,
                           supported_family,
)
from engine.tokenizers import (
                           NAMED_ENCODINGS,
                           BPETrainedEvent,
                           CharTokenizer,
                           ChatTemplateError,
                           Tokenizer,
                           chat_prompt_ids,
                           get_tokenizer,
                           merges_table,
                           named_encoding_problem,
                           named_encoding_status,
                           named_vocab_size,
                           render_bytes,
                           save_tokenizer,
                           tokenizer_problem,
                           train_bpe,
                           train_bpe_job,
                           unknown_characters,
)
from engine.training.run import PreparedRun, RunSpec, prepare_run
from engine.training.runlog import (
                           RunLogWriter,
                           SavedRun,
                           delete_run,
                           export_tensorboard_job,
                           hyperparameters,
                           logged,
                           read_run,
                           read_runs_job,
                           runs_dir,
                           tensorboard_problem,
)
from engine.training.trainer import PROBE_TOKENS, Trainer, corpus_probe_ids, lr_at, text_probe_ids
from engine.validate import parse_json

__all__ = [
    # models and configs
    "GPT", "ModelConfig", "TrainConfig", "PRESETS", "preset", "BYTES_PER_PARAM", "MAX_CONTEXT_LENGTH", "MAX_EMB_DIM",
    "MAX_HEADS", "MAX_LAYERS", "MAX_VOCAB_SIZE",
    # files
    "CheckpointError", "load_checkpoint", "read_checkpoint_info", "save_checkpoint", "import_hf_folder",
    "HFImportError", "atomic_write_text", "read_regular", "parse_json",
    # models on this machine and on the hub
    "ModelEntry", "ModelSource", "OpenedModel", "SourceError", "list_models", "open_model", "open_model_job",
    "resolve_source", "supported_family", "DownloadCancelled", "HubDownloadProgress", "HubError", "download_model_job",
    # data
    "BUILTIN_CORPORA", "Corpus", "CorpusError", "Dataset", "corpus_names", "is_synthetic", "load_corpus",
    "load_corpus_job",
    # devices and precisions
    "INFERENCE_PRECISIONS", "TRAINING_PRECISIONS", "available_devices", "check_precision", "device_name", "pick_device",
    "precision_options", "precision_problem", "preferred_training_precision",
    # events (dispatch on the class) and driving jobs
    "Event", "ProgressEvent", "StartedEvent", "StepEvent", "EvalEvent", "SampleEvent", "AttentionProbeEvent",
    "CheckpointEvent", "FinishedEvent", "ErrorEvent", "BPETrainedEvent", "GenerationStepEvent",
    "GenerationDoneEvent", "run_job",
    # inference
    "SamplingConfig", "next_token_probs", "filter_stages", "attention_maps", "attention_rollout", "decoder_for",
    "prompt_token_ids", "stop_token_ids", "stream_generate", "weights_memory_bytes", "window_length",
    # the inference forward's capture options (Decoder.forward, through decoder_for)
    "ForwardOptions", "ForwardOutput", "Ablation", "AblationMeans",
    # looking inside (engine/inspect): logit lens, token losses, attribution, ablation, embedding map
    "LogitLens", "run_logit_lens", "token_losses", "perplexity", "Attribution", "run_attribution", "GRADIENT_X_INPUT",
    "INTEGRATED_GRADIENTS", "AblationEffect", "HeadSweep", "make_ablation", "run_ablation", "run_head_sweep",
    "EmbeddingMap", "embedding_map",
    # tokenizers
    "NAMED_ENCODINGS", "CharTokenizer", "ChatTemplateError", "Tokenizer", "chat_prompt_ids", "get_tokenizer",
    "merges_table", "named_encoding_problem", "named_encoding_status", "named_vocab_size", "render_bytes",
    "save_tokenizer", "tokenizer_problem", "train_bpe", "train_bpe_job", "unknown_characters",
    # training
    "Trainer", "lr_at", "PROBE_TOKENS", "corpus_probe_ids", "text_probe_ids", "RunSpec", "PreparedRun",
    "prepare_run", "available_memory_bytes", "training_memory_bytes", "training_memory_parts",
    "training_memory_problem",
    # run logs: runs kept in the user's data folder, read back, deleted, exported to TensorBoard
    "RunLogWriter", "SavedRun", "logged", "read_run", "read_runs_job", "delete_run", "runs_dir", "hyperparameters",
    "tensorboard_problem", "export_tensorboard_job",
    # the command line, for the app's Export command
    "train_command", "closest_preset",
]
