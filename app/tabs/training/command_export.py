"""Export command, written to a folder so it runs as given: `train.sh` with the torchrun line, and next to it
what the line needs that only the app has (the tokenizer handed over by the Tokenizer tab, or the current
model's, as `tokenizer.json`). Built-in corpora are named, files are given by their absolute path, and a
fine-tuning run starts from the model's checkpoint file (absolute path), so nothing else is needed.
"""
from __future__ import annotations

import os
from pathlib import Path

from app.tabs.training.torchrun import Launch, torchrun_command
from engine import ModelConfig, Tokenizer, TrainConfig, atomic_write_text, save_tokenizer

SCRIPT = "train.sh"
TOKENIZER_FILE = "tokenizer.json"


def command_for(model: ModelConfig, train: TrainConfig, *, corpus: str, tokenizer: str | Tokenizer | None,
                init: str | None, out: str, launch: Launch, folder: Path | None = None) -> str:
    """The torchrun line; a ready tokenizer is named by its file in `folder` (just `tokenizer.json` before
    the folder is chosen)."""
    if isinstance(tokenizer, Tokenizer):
        spec = str(folder / TOKENIZER_FILE) if folder is not None else TOKENIZER_FILE
    else:
        spec = tokenizer
    return torchrun_command(model, train, corpus=corpus, tokenizer=spec, init=init, out=out, launch=launch)


def write_export(folder: str | os.PathLike, model: ModelConfig, train: TrainConfig, *, corpus: str,
                 tokenizer: str | Tokenizer | None, init: str | None, out: str, launch: Launch) -> Path:
    """Write `train.sh` (and `tokenizer.json` when the run uses the app's own tokenizer) into `folder`, made if
    missing. The script runs in its own folder, so a relative --out lands there. Returns the script's path;
    raises OSError with one line (nothing half-written: each file is written atomically)."""
    if init and not Path(init).is_file():
        raise OSError(f"the checkpoint to fine-tune from, {init}, is not a file")
    folder = Path(folder).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot make {folder}: {e.strerror or e}") from None
    if isinstance(tokenizer, Tokenizer) and not init:  # fine-tuning takes the checkpoint's own tokenizer
        save_tokenizer(tokenizer, folder / TOKENIZER_FILE)
    # The folder's own files by their names: the folder can be copied to a cluster as it is.
    line = command_for(model, train, corpus=corpus, tokenizer=tokenizer, init=init, out=out, launch=launch)
    script = folder / SCRIPT
    atomic_write_text(script, "\n".join([
        "#!/bin/sh",
        "# LLM Playground's Export command: the Training tab's run under torchrun (see the README's",
        "# multi-GPU section). It runs in its own folder, where the files it names are.",
        'cd "$(dirname "$0")" || exit 1',
        f"exec {line}",
        ""]))
    script.chmod(0o755)
    return script
