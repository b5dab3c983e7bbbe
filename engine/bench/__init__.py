"""Speed benchmarks, each against a peer measured in the same run (`python -m engine bench WHAT`)."""
