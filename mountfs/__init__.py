"""mountfs: object stores and local folders as one POSIX tree, read through a persistent block cache."""

__version__ = "0.1.0"
