"""LLM Playground: `python main.py [CHECKPOINT.safetensors | TEXT_FILE]`."""
import sys

from app.launcher import main

if __name__ == "__main__":
    sys.exit(main())
