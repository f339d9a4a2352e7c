"""``soundsift export onnx --model M OUT_DIR``: the model's towers as ONNX graphs (``soundsift.export``)."""

from __future__ import annotations

import argparse


def export_onnx_main(args: argparse.Namespace) -> int:
    from soundsift.export.runtime import onnxruntime

    onnxruntime()  # says how to install it before the model loads
    from soundsift.checkpoints import load_model
    from soundsift.export.onnx import export_onnx

    report = export_onnx(load_model(args.model, device="cpu"), args.out_dir, name=args.model, quantize=args.quantize)
    size = sum(report.files.values()) / 1e6
    print(f"exported {args.model} to {report.folder} ({len(report.files)} files, {size:.1f} MB); largest difference "
          f"from torch: audio {report.audio_max_diff:.2g}, text {report.text_max_diff:.2g}"
          + (f"; weights quantized to {report.quantize}" if report.quantize else ""))
    return 0


#: the commands add_parsers registers (soundsift.cli.main builds only the group of the command run)
COMMANDS = ("export",)


def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="export a model for another runtime (ONNX)")
    kinds = p.add_subparsers(dest="export_kind", required=True)
    o = kinds.add_parser("onnx", help="audio and text towers as ONNX graphs with a manifest, checked against torch")
    o.add_argument("out_dir", help="folder to write (new, or empty); load it with --model OUT_DIR or soundsift.load_model")
    o.add_argument("--model", default="zero-shot",
                   help="a model file (model.pt), a folder, or a published name (default: zero-shot)")
    o.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8: dynamic quantization of the weights (smaller, faster on CPU, slightly different "
                        "embeddings; an index built with it is searched with it); default: float32")
    o.set_defaults(func=export_onnx_main)
