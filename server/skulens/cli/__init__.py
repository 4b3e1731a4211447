"""The `skulens` command (main.py parses, the other modules run the commands)."""

from .main import main

__all__ = ["main"]
