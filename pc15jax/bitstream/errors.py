"""The one exception type of the host codec."""

__all__ = ["BitstreamError"]


class BitstreamError(ValueError):
    """A malformed, truncated or corrupt PC15 stream (or rANS payload)."""
