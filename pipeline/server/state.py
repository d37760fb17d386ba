"""What every request handler reaches: the pipeline, the stores and the key ring."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.server.auth import KeyRing, Principal
from pipeline.server.batches import BatchStore
from pipeline.server.chat import ChatBatcher
from pipeline.server.files import FileStore


@dataclass
class ServerState:
    pipeline: Pipeline
    client: BatchwiseClient
    keyring: KeyRing
    files: FileStore
    batches: BatchStore
    chat: ChatBatcher


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.batchwise
    return state


def principal(request: Request) -> Principal:
    """The request's principal, authenticated once (401 when the key is missing or wrong)."""
    found = request.scope.setdefault("state", {}).get("principal")
    if isinstance(found, Principal):
        return found
    who = state_of(request).keyring.authenticate(request)
    request.scope["state"]["principal"] = who
    return who
