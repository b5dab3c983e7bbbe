"""Looking inside a model on a text: the logit lens and token losses, attribution, ablation and head sweeps,
the embedding map. Every analysis runs through the one inference forward (`Decoder.forward` and its
`ForwardOptions`), so it works for every model family the forward knows.

Analyses that can take long come as jobs: generators that yield `ProgressEvent`s between steps (so the app
can show progress and stop them) and end with their result, an `Event` of plain arrays. Each also has a
plain function that runs the job and returns the result.
"""
from engine.inspect.ablation import (
    AblationEffect,
    HeadSweep,
    ablation_effect,
    describe,
    head_sweep,
    make_ablation,
    parse_head,
    run_ablation,
    run_head_sweep,
)
from engine.inspect.attribution import (
    GRADIENT_X_INPUT,
    INTEGRATED_GRADIENTS,
    Attribution,
    gradient_x_input,
    integrated_gradients,
    run_attribution,
    run_integrated_gradients,
)
from engine.inspect.common import perplexity
from engine.inspect.embedding_map import EmbeddingMap, embedding_map
from engine.inspect.lens import LogitLens, logit_lens, run_logit_lens, token_losses

__all__ = [
    "AblationEffect", "HeadSweep", "ablation_effect", "describe", "head_sweep", "make_ablation", "parse_head",
    "run_ablation", "run_head_sweep",
    "GRADIENT_X_INPUT", "INTEGRATED_GRADIENTS", "Attribution", "gradient_x_input", "integrated_gradients",
    "run_attribution", "run_integrated_gradients",
    "perplexity", "EmbeddingMap", "embedding_map", "LogitLens", "logit_lens", "run_logit_lens", "token_losses",
]
