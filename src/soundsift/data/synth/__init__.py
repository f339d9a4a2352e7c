"""The embedded benchmark: procedural sounds (``sounds``), captions (``text``, ``lexicon``), facts, and the
generator writing the ClothoV2 layout (``benchmark``)."""
