"""The names of the published models (``load.PUBLISHED`` loads them), importable without torch."""

PUBLISHED_NAMES = ("salsa", "zero-shot", "laion-clap")
