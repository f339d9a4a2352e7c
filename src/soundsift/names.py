"""Names that files, configs and code share: the split names and the keys of the retrieval metrics.

Standard library only (layer 0), so that any module, the config and the CLI included, can use them
without importing torch.
"""

from __future__ import annotations

#: ClothoV2's split names, which soundsift uses for every dataset (readers map train/val/test onto them)
TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = "development", "validation", "evaluation"
SPLITS = (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)

#: the DCASE ranking metric, as the metric functions key it (checkpoints are selected on it)
MAP_AT_10 = "mAP@10"
#: the columns of a DCASE results table, in the order the challenge reports them
DCASE_COLUMNS = (MAP_AT_10, "R@1", "R@5", "R@10")
#: the metric checkpoints are selected on, as validation logs it (history.json's "monitor")
MONITOR = f"val/{MAP_AT_10}"
