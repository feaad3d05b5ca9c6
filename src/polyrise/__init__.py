"""polyrise: multilingual self-improvement of large language models."""

__version__ = "0.1.0"
