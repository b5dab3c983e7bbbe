"""`python -m engine inspect MODEL --text TEXT [--top-k K] [--ablate L.H ...] [--attribute POS] [--json]`.

Runs a model (a checkpoint, a Hugging Face folder or cached repo id, a GGUF file; in fp32) on a text and prints what the Inside tab shows, from the same engine functions
(engine/inspect). With --json, one object:
{"ids": [...], "token_loss": [...], "logit_lens": [...], "attribution": [...]}
- ids: the text's token ids;
- token_loss[i]: -ln p(ids[i] | ids[:i]) for i >= 1, null at 0;
- logit_lens: one entry per block (n_layers), each a list with one {"ids": [...], "probs": [...]} per position:
  the top-K ids and their probabilities at that block's output (final norm and head applied); the last
  entry is the model's own next-token distribution;
- attribution: with --attribute POS, gradient x input for the model's top next token at POS (the L2 norm per
  input position 0..POS of the gradient of its logit with respect to the token embeddings, times them);
  [] without it.
--ablate L.H zeroes head H of block L (its slice of the attention output before the output projection) for
everything above; blocks and heads count from 0; repeatable. Without --json, a readable table.
"""
from __future__ import annotations

import argparse
import json
import math
from typing import Any

from engine.cli.errors import CLIError, one_line_errors
from engine.device import pick_device
from engine.generation.capture import Ablation
from engine.inspect import LogitLens, gradient_x_input, logit_lens, parse_head
from engine.sources import open_model


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inspect", help="logit lens, token losses and attribution of a checkpoint on a text",
        description="Run a checkpoint on a text and show what each block predicts (the logit lens: the final "
                    "norm and head applied to each block's output), each token's loss, and optionally "
                    "gradient x input attribution, with heads switched off if asked.")
    one_line_errors(p)
    p.add_argument("checkpoint", metavar="MODEL",
                   help="a .safetensors checkpoint, a Hugging Face model folder, a cached repo id or a .gguf file")
    p.add_argument("--text", required=True, metavar="TEXT", help="the text to run the model on")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="top tokens per block and position (default 5)")
    p.add_argument("--ablate", action="append", default=[], metavar="L.H",
                   help="zero head H of block L (from 0) for the whole run; repeat for more heads")
    p.add_argument("--attribute", type=int, default=None, metavar="POS",
                   help="gradient x input for the model's top next token at position POS (from 0)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|mps", help="where to run (default: auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def as_json(lens: LogitLens, attribution: list[float]) -> dict[str, Any]:
    return {
        "ids": list(lens.ids),
        "token_loss": [_finite(float(x)) for x in lens.token_loss],
        "logit_lens": [[{"ids": ids.tolist(), "probs": [float(p) for p in probs]}
                        for ids, probs in zip(layer_ids, layer_probs)]
                       for layer_ids, layer_probs in zip(lens.top_ids, lens.top_probs)],
        "attribution": attribution,
    }


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise CLIError(f"--top-k must be at least 1, got {args.top_k}")
    heads = tuple(parse_head(h) for h in args.ablate)
    if not args.text:
        raise CLIError("--text is empty: give some text to run the model on")
    opened = open_model(args.checkpoint, dtype="fp32", device=pick_device(args.device))
    model, tokenizer = opened.model, opened.tokenizer
    ids = list(tokenizer.encode(args.text))
    if not ids:
        raise CLIError("the text gave no tokens")
    ablation = Ablation(heads=heads) if heads else None
    if ablation is not None:
        ablation.check(model.config)
    if args.attribute is not None and not 0 <= args.attribute < len(ids):
        raise CLIError(f"--attribute {args.attribute} is outside the text's {len(ids)} tokens (0 to {len(ids) - 1})")
    lens = logit_lens(model, ids, args.top_k, ablation)
    attribution = None
    if args.attribute is not None:
        attribution = gradient_x_input(model, ids, args.attribute, None, ablation)
    if args.json:
        scores = [float(x) for x in attribution.scores] if attribution is not None else []
        print(json.dumps(as_json(lens, scores), ensure_ascii=False))
        return 0
    def show(token_id: int, width: int) -> str:  # spaces made visible, cut to the column
        return tokenizer.render_token(token_id).replace(" ", "\u2423")[:width]

    width = max(5, *(len(show(i, 12)) for i in ids))
    print(f"{len(ids)} tokens · perplexity {lens.perplexity:.3f}" if len(ids) > 1 else "1 token")
    print("top token and its probability at each block's output (the last block's is the model's own):")
    print(f"{'pos':>4}  {'token':<{width}}  {'loss':>6}  "
          + "  ".join(f"{'block ' + str(b):<11}" for b in range(len(lens.top_ids))))
    for t, token in enumerate(ids):
        loss = "" if t == 0 else f"{lens.token_loss[t]:6.3f}"
        cells = "  ".join(f"{show(int(lens.top_ids[b, t, 0]), 6):<6} {lens.top_probs[b, t, 0] * 100:3.0f}%"
                          for b in range(len(lens.top_ids)))
        print(f"{t:>4}  {show(token, 12):<{width}}  {loss:>6}  {cells}")
    if attribution is not None:
        print(f"\ngradient x input for {tokenizer.render_token(attribution.target)!r} "
              f"(p = {attribution.target_prob:.3f}) after position {attribution.position}:")
        for t, score in enumerate(attribution.scores):
            print(f"{t:>4}  {show(ids[t], 12):<{width}}  {score:.5f}")
    return 0
