"""Two moment prediction files on the same annotations: each one's R1@0.5 / R1@0.7 / mAP@0.5 / mAP and the
paired bootstrap interval (over queries, 10,000 resamples, 95 %) of the difference B - A.

    python benchmarks/moments.py GT.jsonl A.jsonl B.jsonl
"""

from __future__ import annotations

import json
import sys

from soundsift.training.moment_compare import compare_files

if __name__ == "__main__":
    print(json.dumps(compare_files(*sys.argv[1:4]), indent=2))
