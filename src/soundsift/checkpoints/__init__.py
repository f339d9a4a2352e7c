"""Model files: the soundsift format (``format``), ``load_model`` with format detection (``load``), the
Hugging Face layout (``hub``) and the paper authors' salsa checkpoint (``salsa``)."""

from soundsift.checkpoints.format import read_model_file, save_model
from soundsift.checkpoints.hub import from_pretrained, save_pretrained
from soundsift.checkpoints.load import detect_format, load_model
from soundsift.checkpoints.salsa import load_salsa_checkpoint

__all__ = [
    "detect_format", "from_pretrained", "load_model", "load_salsa_checkpoint", "read_model_file",
    "save_model", "save_pretrained",
]
