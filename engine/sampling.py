"""`engine.sampling` stays importable for users' scripts; the code lives in engine/generation/sampling.py."""
from engine.generation.sampling import (
                                        MAX_NEW_TOKENS,
                                        MAX_REPETITION_PENALTY,
                                        MAX_TEMPERATURE,
                                        REMOVED_BY_GREEDY,
                                        REMOVED_BY_MIN_P,
                                        REMOVED_BY_TOP_K,
                                        REMOVED_BY_TOP_P,
                                        FilterStages,
                                        RowSettings,
                                        SamplingConfig,
                                        apply_penalty,
                                        apply_warpers,
                                        filter_stages,
                                        greedy_probs,
                                        next_token_probs,
                                        probs_from_logits,
                                        sample_inverse_cdf,
                                        seen_mask,
)

__all__ = [
    "MAX_NEW_TOKENS", "MAX_REPETITION_PENALTY", "MAX_TEMPERATURE", "REMOVED_BY_GREEDY", "REMOVED_BY_MIN_P",
    "REMOVED_BY_TOP_K", "REMOVED_BY_TOP_P", "FilterStages", "RowSettings", "SamplingConfig", "apply_penalty",
    "apply_warpers", "filter_stages", "greedy_probs", "next_token_probs", "probs_from_logits",
    "sample_inverse_cdf", "seen_mask",
]
