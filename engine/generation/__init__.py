"""Inference: sampling filters, precisions, the one inference forward and its capture options, generation and
attention maps."""
from engine.generation.agreement import AgreementReport, greedy_agreement
from engine.generation.attention import attention_maps, attention_rollout
from engine.generation.capture import Ablation, AblationMeans, ForwardOptions, ForwardOutput
from engine.generation.forward import Decoder, decoder_for
from engine.generation.precision import model_device, prepare_for_inference, weights_memory_bytes
from engine.generation.sampling import FilterStages, SamplingConfig, filter_stages, next_token_probs
from engine.generation.stream import (
                                      TOP_CANDIDATES,
                                      GenerationDoneEvent,
                                      GenerationResult,
                                      GenerationStepEvent,
                                      TokenRecord,
                                      generate,
                                      prompt_token_ids,
                                      stop_token_ids,
                                      stream_generate,
                                      window_keep,
                                      window_length,
)

__all__ = [
    "AgreementReport", "greedy_agreement", "attention_maps", "attention_rollout", "Decoder", "decoder_for",
    "Ablation", "AblationMeans", "ForwardOptions", "ForwardOutput",
    "model_device", "prepare_for_inference", "weights_memory_bytes", "FilterStages", "SamplingConfig",
    "filter_stages", "next_token_probs", "TOP_CANDIDATES", "GenerationDoneEvent", "GenerationResult",
    "GenerationStepEvent", "TokenRecord", "generate", "prompt_token_ids", "stop_token_ids", "stream_generate",
    "window_keep", "window_length",
]
