"""The error types that mean 'bad input', reported by the CLI as one clear line (exit code 2)."""

from soundsift.audio import AudioError
from soundsift.config import ConfigError
from soundsift.data.records import DatasetError
from soundsift.model import ModelFileError

USER_ERRORS: tuple[type[Exception], ...] = (
    AudioError, ConfigError, DatasetError, ModelFileError, FileNotFoundError, ValueError, KeyError,
)
