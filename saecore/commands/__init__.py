"""Subcommands of `python -m saecore` beyond the core ones; each module has `register(subparsers)`.

Command modules only parse arguments, call library functions and print; heavy imports
(transformers, sentence-transformers, ray) happen inside the handlers, never at import.
"""
