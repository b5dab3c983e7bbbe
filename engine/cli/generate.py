"""`python -m engine generate MODEL --prompt TEXT ...`: sample text from a checkpoint, a Hugging Face model
folder, or a model in the Hugging Face cache (by repo id).

Without --json the prompt and then each new piece of text are printed as they come, and the speed
goes to stderr. With --json one object is printed at the end:
{"prompt_ids": [...], "new_ids": [...], "text": "<the new text>", "tokens_per_s": x, "seed": s,
 "stop_reason": "max_new_tokens" | "eot" | "stop_string"}.
Exactly --max-new-tokens tokens are generated unless --stop-at-eot is given and the model ends the text.

--chat makes --prompt the user's message: the conversation ([--system TEXT], then the message) is rendered with
the model's chat template, only the reply is printed, and generation stops at the model's end-of-turn ids
(generation_config.json's eos_token_id list) as well as at --max-new-tokens.

--compile runs the compiled static-cache decode step (engine/generation/compiled.py; the default on CUDA,
--no-compile turns it off); a first compile is announced on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from engine.cli.errors import CLIError, one_line_errors
from engine.device import INFERENCE_PRECISIONS, pick_device
from engine.events import ProgressEvent
from engine.generation.sampling import SamplingConfig
from engine.generation.stream import GenerationDoneEvent, stop_token_ids, stream_generate
from engine.sources import open_model
from engine.tokenizers.chat import chat_prompt_ids

# The number format a model is in, as a precision name ("auto" generates in it).
_DTYPE_PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text from a checkpoint or a Hugging Face model",
        description="Generate text from a checkpoint, a Hugging Face model folder, or a model in the Hugging Face "
                    "cache (its repo id). Filters apply in this order, as in Hugging Face "
                    "transformers: repetition penalty, temperature, top-k, top-p, min-p. An empty prompt starts "
                    "from the end-of-text token (or a newline); a prompt longer than the context keeps its end.")
    one_line_errors(p)
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a .safetensors checkpoint, a Hugging Face model folder, or a cached model's repo id")
    p.add_argument("--prompt", required=True, metavar="TEXT",
                   help="text to continue (may be empty); with --chat, the user's message")
    p.add_argument("--chat", action="store_true",
                   help="chat: render --prompt as the user's turn with the model's chat template, print only the "
                        "reply, and stop at the model's end-of-turn tokens")
    p.add_argument("--system", metavar="TEXT", help="with --chat: a system prompt before the user's message")
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
    p.add_argument("--precision", choices=("auto", *INFERENCE_PRECISIONS), default="auto",
                   help="number format: auto (the model's own: fp32 for checkpoints, bf16 for a bf16 model), fp32, "
                        "bf16, fp16 (CUDA only) or int8 (CPU only)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|mps",
                   help="where to run (default: CUDA if present, else CPU; int8 always runs on the CPU)")
    p.add_argument("--stop-at-eot", action="store_true", help="stop when the model writes its end-of-text token (or one of its end-of-turn tokens)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="decode with a step compiled by torch.compile (CUDA graphs on a GPU); default: on CUDA "
                        "only. The first run for a model shape, precision and batch size compiles (seconds on a "
                        "GPU, up to minutes on a CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.system is not None and not args.chat:
        raise CLIError("--system needs --chat")
    config = SamplingConfig(
        greedy=args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens, seed=args.seed,
        stop_at_eot=args.stop_at_eot or args.chat)
    device = "cpu" if args.precision == "int8" else pick_device(args.device)
    # A Hugging Face folder opens straight in the format asked for (one copy of the weights); "auto" keeps its own.
    dtype = {"auto": "auto", "int8": "fp32"}.get(args.precision, args.precision)
    opened = open_model(args.checkpoint, dtype=dtype, device=device)
    model, tokenizer = opened.model, opened.tokenizer
    precision = args.precision
    if precision == "auto":
        precision = _DTYPE_PRECISION.get(next(model.parameters()).dtype, "fp32")
    prompt_ids = None
    if args.chat:
        if not getattr(tokenizer, "chat_template", None):
            raise CLIError(f"{opened.source.name} has no chat template (--chat needs an instruct model with a "
                           "tokenizer.json and a chat template)")
        prompt_ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": args.prompt}], system=args.system)
    events = stream_generate(model, tokenizer, args.prompt, [config], precision=precision, prompt_ids=prompt_ids,
                             compile=args.compile)

    stop_ids = stop_token_ids(tokenizer)
    done: GenerationDoneEvent | None = None
    if not args.json and not args.chat:
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
    for event in events:
        if isinstance(event, GenerationDoneEvent):
            done = event
        elif isinstance(event, ProgressEvent):
            print(event.message, file=sys.stderr, flush=True)
        elif not args.json:
            row = event.rows[0]
            if args.chat and row.done and row.token_id in stop_ids:
                continue  # the end-of-turn token closes the reply; it is not part of it
            sys.stdout.write(row.piece)
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
