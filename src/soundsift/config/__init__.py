"""Experiment configs: YAML files merged over defaults, ``a.b.c=value`` overrides, one typed ``Config``.

``load_config`` returns a frozen :class:`Config` whose sections (``data``, ``model``, ``loss``,
``optim``, ``trainer``, ``estimator``) each go to the component that owns them; ``Config.to_dict()`` is
the nested dict ``config.yaml`` holds. Validation is pydantic's (docs/architecture.md says why).
"""

from soundsift.config.estimators import (
    EstimatorRecord,
    estimator_names,
    estimator_record,
    register_estimator,
    unregister_estimator,
)
from soundsift.config.load import (
    DEFAULTS,
    RUN_DIR_ENV,
    apply_overrides,
    build_config,
    default_out_dir,
    dump_config,
    load_config,
    merge,
    parse_override,
    read_yaml,
    resolve_config_path,
)
from soundsift.config.schema import (
    Config,
    DataConfig,
    EncoderSpec,
    EstimatorConfig,
    ExtraTrain,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainerConfig,
)

__all__ = [
    "DEFAULTS", "RUN_DIR_ENV", "Config", "DataConfig", "EncoderSpec", "EstimatorConfig", "EstimatorRecord",
    "ExtraTrain", "LossConfig", "ModelConfig", "OptimConfig", "TrainerConfig", "apply_overrides", "build_config",
    "default_out_dir", "dump_config", "estimator_names", "estimator_record", "load_config", "merge",
    "parse_override", "read_yaml", "register_estimator", "resolve_config_path", "unregister_estimator",
]
