"""ONNX export and the ONNX Runtime model (``soundsift export onnx``, ``--runtime onnx``).

``export.onnx`` (torch) writes and checks an exported folder; ``export.runtime`` (no torch) runs one;
``checkpoints.runtime`` loads a model for the runtime a command asks for.
"""
