"""mil-assert: algorithmic unit tests for deep Multiple Instance Learning models."""

__version__ = "0.1.0"
