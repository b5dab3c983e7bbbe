"""Tokenizers behind one small interface: encode, decode, per-token bytes and display, JSON state.

Kinds:
- `char`: one token per character of the corpus (CharTokenizer).
- byte-level BPE as a `tiktoken.Encoding` (TiktokenTokenizer, also called BPETokenizer): trained here
  (engine/tokenizers/training.py), imported from a Hugging Face vocab.json + merges.txt, read from a
  `.tiktoken` file, or
  one of tiktoken's named encodings (gpt2, r50k_base, p50k_base, cl100k_base, o200k_base).

Every tokenizer can be written into a checkpoint's metadata (`to_dict`) and rebuilt from it
(`tokenizer_from_dict`), so a model file alone is enough to tokenize again: trained and imported BPEs
store their ranks, pattern and special tokens; named encodings store only their name and are loaded
again from the app's cache (or the network).

Special tokens (the policy): text is always encoded as *ordinary* text. The string "<|endoftext|>" in
a corpus, a prompt or the Tokenizer tab becomes the tokens of "<", "|", "endo"... and never raises and
never becomes the special id; only the engine inserts the real end-of-text id (`eot_id`), to join
documents (engine/data.py). Decoding a special id gives its text ("<|endoftext|>"). So
decode(encode(s)) == s for every string s of valid Unicode.

Lone surrogates (code points U+D800..U+DFFF on their own, which are not valid Unicode and only come
from broken input) cannot be UTF-8 encoded: the BPE tokenizers turn each into U+FFFD, and a surrogate
*pair* written as two code points into the character it stands for (as tiktoken does). The char
tokenizer keeps them if they were in its corpus.

Named encodings never hang offline: their files are fetched into the app's own cache
(`<user cache>/llm-playground/tiktoken`, or $LLM_PLAYGROUND_CACHE/tiktoken) with a short deadline, and
a machine without network gets `TokenizerUnavailable` with the reason within about two seconds.
"""
from engine.tokenizers.base import (
                  CharTokenizer,
                  Tokenizer,
                  register,
                  render_bytes,
                  tokenizer_from_dict,
                  unknown_characters,
)
from engine.tokenizers.bpe import (
                  CL100K_PATTERN,
                  ENDOFTEXT,
                  GPT2_PATTERN,
                  MAX_BPE_TOKENS,
                  O200K_PATTERN,
                  PATTERNS,
                  TiktokenTokenizer,
                  TokenizerUnavailable,
                  gpt2_byte_decoder,
                  ranks_from_text,
                  ranks_to_text,
                  tokenizer_from_hf_files,
)
from engine.tokenizers.chat import ChatTemplateError, chat_prompt_ids, chat_prompt_text, render_chat
from engine.tokenizers.files import TOKENIZER_FILE_FORMAT, load_tiktoken_file, load_tokenizer_file, save_tokenizer
from engine.tokenizers.hf import HFTokenizer, HFTokenizerConfig, load_hf_tokenizer
from engine.tokenizers.named import (
                  NAMED_CONNECT_TIMEOUT_S,
                  NAMED_ENCODINGS,
                  NamedEncoding,
                  load_named_encoding,
                  named_encoding_problem,
                  named_encoding_status,
                  named_vocab_size,
                  tiktoken_cache_dir,
)
from engine.tokenizers.spec import TOKENIZER_SPECS_HELP, get_tokenizer, parse_bpe_spec, tokenizer_problem
from engine.tokenizers.training import (
                  MAX_VOCAB_SIZE,
                  MIN_VOCAB_SIZE,
                  BPETrainedEvent,
                  merges_table,
                  train_bpe,
                  train_bpe_job,
)

__all__ = [
    "CharTokenizer", "Tokenizer", "register", "render_bytes", "tokenizer_from_dict", "unknown_characters",
    "CL100K_PATTERN", "ENDOFTEXT", "GPT2_PATTERN", "MAX_BPE_TOKENS", "O200K_PATTERN", "PATTERNS", "TiktokenTokenizer",
    "TokenizerUnavailable", "gpt2_byte_decoder", "ranks_from_text", "ranks_to_text", "tokenizer_from_hf_files",
    "TOKENIZER_FILE_FORMAT", "load_tiktoken_file", "load_tokenizer_file", "save_tokenizer",
    "NAMED_CONNECT_TIMEOUT_S", "NAMED_ENCODINGS", "NamedEncoding", "load_named_encoding", "named_encoding_status",
    "named_encoding_problem", "named_vocab_size", "tiktoken_cache_dir", "TOKENIZER_SPECS_HELP", "get_tokenizer",
    "parse_bpe_spec", "tokenizer_problem",
    "ChatTemplateError", "chat_prompt_ids", "chat_prompt_text", "render_chat", "HFTokenizer", "HFTokenizerConfig",
    "load_hf_tokenizer", "MAX_VOCAB_SIZE", "MIN_VOCAB_SIZE", "BPETrainedEvent", "merges_table", "train_bpe", "train_bpe_job",
]
