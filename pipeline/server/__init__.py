"""The HTTP API (`batchwise serve`): OpenAI Files/Batches and chat completions, native task
endpoints, tenants bound to API keys. See docs/server.md."""

from pipeline.server.app import create_app

__all__ = ["create_app"]
