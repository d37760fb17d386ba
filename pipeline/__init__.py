"""batchwise: an asynchronous batch pipeline that cuts the cost of LLM API work."""

from __future__ import annotations

__version__ = "0.1.0"
