"""soundsift version (its own module so that any module may import it without importing the package API)."""

__version__ = "0.1.0"
