"""indexer's benchmarks: `python -m bench CASE [options]`, run from the repository root (`python -m bench`
lists the cases). Each case is a module of bench/cases/; what they share is in _common.py (machine,
timing, child processes, libraries, reports) and _corpus.py (the real-text corpora). See bench/README.md.
"""
