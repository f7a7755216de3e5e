"""Workflows behind the CLI commands (rank 5): each composes the library, prints and writes files.

Each module here stays light to import: JAX, matplotlib and pandas are imported inside the
functions that need them, so ``jaxreg --help`` is fast. Modules here never import each other.
"""
