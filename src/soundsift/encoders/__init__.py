"""Encoder registry with the built-in encoders, registered lazily by module path."""

from soundsift.encoders.base import AudioEncoder, TextEncoder
from soundsift.encoders.registry import (
    audio_encoder_names,
    build_audio_encoder,
    build_text_encoder,
    register_audio_encoder,
    register_text_encoder,
    text_encoder_names,
)

# Small encoders that train from scratch on a CPU (demo, tests).
register_audio_encoder("cnn", "soundsift.encoders.cnn:CNNEncoder")
register_audio_encoder("patchformer", "soundsift.encoders.patchformer:PatchTransformerEncoder")
register_audio_encoder("crnn", "soundsift.encoders.crnn:CRNNEncoder")
# The paper's pretrained audio encoders (and others), with checkpoint download.
register_audio_encoder("passt", "soundsift.encoders.passt:PaSSTEncoder")
register_audio_encoder("mn", "soundsift.encoders.mn:MobileNetEncoder")
register_audio_encoder("atst", "soundsift.encoders.atst:ATSTFrameEncoder")
register_audio_encoder("yamnet", "soundsift.encoders.yamnet.model:YAMNetEncoder")
register_audio_encoder("yamnet-bridge", "soundsift.encoders.zeroshot:YAMNetBridgeEncoder")  # zero-shot
register_audio_encoder("ast", "soundsift.encoders.hf_audio:ASTEncoder")
register_audio_encoder("clap", "soundsift.encoders.hf_audio:CLAPAudioEncoder")
register_audio_encoder("laion-clap", "soundsift.encoders.clap:LaionClapAudioEncoder")  # + its text tower below

# Text encoders: any transformers model, the offline MiniLM, a tiny random one for tests.
register_text_encoder("hf", "soundsift.encoders.text:HFTextEncoder")
register_text_encoder("minilm", "soundsift.encoders.text:MiniLMTextEncoder")
register_text_encoder("tiny-bert", "soundsift.encoders.text:TinyBertTextEncoder")
register_text_encoder("laion-clap", "soundsift.encoders.clap:LaionClapTextEncoder")
register_text_encoder("yamnet-classes", "soundsift.encoders.zeroshot:ClassQueryTextEncoder")  # zero-shot queries

__all__ = [
    "AudioEncoder",
    "TextEncoder",
    "audio_encoder_names",
    "build_audio_encoder",
    "build_text_encoder",
    "register_audio_encoder",
    "register_text_encoder",
    "text_encoder_names",
]
