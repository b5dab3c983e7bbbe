"""`python -m engine generate CKPT --prompt TEXT ...`: sample text from a checkpoint.

Without --json the prompt and then each new piece of text are printed as they come, and the speed
goes to stderr. With --json one object is printed at the end:
{"prompt_ids": [...], "new_ids": [...], "text": "<the new text>", "tokens_per_s": x, "seed": s,
 "stop_reason": "max_new_tokens" | "eot" | "stop_string"}.
Exactly --max-new-tokens tokens are generated unless --stop-at-eot is given and the model ends the text.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.checkpoint import load_checkpoint
from engine.cli.errors import one_line_errors
from engine.device import INFERENCE_PRECISIONS, pick_device
from engine.generation.sampling import SamplingConfig
from engine.generation.stream import GenerationDoneEvent, stream_generate


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text from a checkpoint",
        description="Generate text from a checkpoint. Filters apply in this order, as in Hugging Face "
                    "transformers: repetition penalty, temperature, top-k, top-p, min-p. An empty prompt starts "
                    "from the end-of-text token (or a newline); a prompt longer than the context keeps its end.")
    one_line_errors(p)
    p.add_argument("checkpoint", metavar="CKPT", help="a .safetensors checkpoint")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="text to continue (may be empty)")
    p.add_argument("--max-new-tokens", type=int, default=100, metavar="N", help="tokens to generate (default 100)")
    p.add_argument("--greedy", action="store_true", help="always take the most probable token")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="divide the logits by T: <1 sharper, >1 flatter, 0 = greedy (default 1)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="keep the K most probable tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P",
                   help="keep the smallest set of tokens whose probabilities reach P (1 = off)")
    p.add_argument("--min-p", type=float, default=0.0, metavar="M",
                   help="drop tokens below M x the top token's probability (0 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R",
                   help="make tokens already in the text less likely (>1), 1 = off")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="seed for the random draws (default: fresh)")
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32",
                   help="number format: fp32, bf16, fp16 (CUDA only) or int8 (CPU only)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|mps",
                   help="where to run (default: CUDA if present, else CPU; int8 always runs on the CPU)")
    p.add_argument("--stop-at-eot", action="store_true", help="stop when the model writes its end-of-text token")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = SamplingConfig(
        greedy=args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens, seed=args.seed,
        stop_at_eot=args.stop_at_eot)
    device = "cpu" if args.precision == "int8" else pick_device(args.device)
    checkpoint = load_checkpoint(args.checkpoint, device=device)
    events = stream_generate(checkpoint.model, checkpoint.tokenizer, args.prompt, [config], precision=args.precision)

    done: GenerationDoneEvent | None = None
    if not args.json:
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
    for event in events:
        if isinstance(event, GenerationDoneEvent):
            done = event
        elif not args.json:
            sys.stdout.write(event.rows[0].piece)
            sys.stdout.flush()
    assert done is not None
    if args.json:
        print(json.dumps({"prompt_ids": list(done.prompt_ids), "new_ids": list(done.ids[0]), "text": done.texts[0],
                          "tokens_per_s": round(done.tokens_per_s, 3), "seed": done.seeds[0],
                          "stop_reason": done.stop_reasons[0]}, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        print(f"{len(done.ids[0])} tokens, {done.tokens_per_s:.1f} tokens/s, seed {done.seeds[0]}"
              f"{'' if done.stop_reasons[0] == 'max_new_tokens' else ', stopped at ' + done.stop_reasons[0]}",
              file=sys.stderr)
    return 0
