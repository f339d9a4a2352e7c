"""soundsift: language-based audio retrieval with estimated audio-caption correspondences.

Importing the package is cheap: heavy modules (torch models, Lightning, transformers) load on use.
"""

__version__ = "0.1.0"
