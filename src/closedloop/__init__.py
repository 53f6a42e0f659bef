"""closedloop: a self-hosted customer sentiment and response hub."""

__version__ = "0.1.0"
__all__ = ["__version__"]
