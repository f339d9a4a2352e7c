"""``soundsift models``: the published models every ``--model`` accepts by name."""

from __future__ import annotations

import argparse
import json


def models_main(args: argparse.Namespace) -> int:
    from soundsift.checkpoints.load import list_models

    rows = [{"name": m.name, "what": m.description, "trained_on": m.trained_on, "size": m.size, "source": m.source,
             "available_offline": m.available_offline, "measured": m.measured} for m in list_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}: {row.get('what', '')}")
        print(f"  trained on: {row.get('trained_on', '?')}; {row.get('size', '')}; {row.get('source', '')}; "
              f"{'available offline' if row['available_offline'] else 'needs a download'}")
        print(f"  measured: {row['measured']}")
    return 0


#: the commands add_parsers registers (soundsift.cli.main builds only the group of the command run)
COMMANDS = ("models",)


def add_parsers(sub) -> None:
    p = sub.add_parser("models", help="published models, usable by name wherever --model is accepted")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=models_main)
