"""Provider prompt caching: a long shared system block is byte-stable and marked for caching."""

from __future__ import annotations

from pipeline.models import Usage
from pipeline.providers.base import ChatRequest, ChatResponse
from pipeline.providers.simulated import SimulatedProvider
from pipeline.testing import make_settings
from workers.testing import pipeline_client

LONG_SYSTEM = "You answer questions about our return policy. " * 20  # ~180 tokens
SHORT_SYSTEM = "Be brief."


class Recorder(SimulatedProvider):
    """The simulated provider, keeping every request it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        response = await super().complete(request)
        return ChatResponse(**{**response.__dict__, "usage": Usage(**response.usage.model_dump())})


async def test_long_shared_system_prompts_are_marked_and_byte_stable(redis_url: str) -> None:
    settings = make_settings(redis_url, prompt_cache_min_tokens=100, max_items={"faq": 3})
    tasks = [
        {"id": f"l{i}", "task_type": "faq", "system": LONG_SYSTEM, "prompt": f"question {i}"}
        for i in range(6)
    ] + [
        {"id": f"s{i}", "task_type": "faq", "system": SHORT_SYSTEM, "prompt": f"q {i}"}
        for i in range(3)
    ]
    recorder = Recorder()
    async with pipeline_client(settings) as client:
        client.pipeline.chain.providers[:] = [recorder]
        run_id = await client.submit(tasks, complete=True)
        for batch_id in await client.pipeline.packer.flush():
            assert await client.pipeline.executor.run(batch_id) == []
        await client.wait(run_id, timeout_s=5)
    long_calls = [r for r in recorder.requests if r.system.startswith(LONG_SYSTEM)]
    short_calls = [r for r in recorder.requests if r.system.startswith(SHORT_SYSTEM)]
    assert len(long_calls) == 2 and len(short_calls) == 1
    assert all(r.cache_prefix for r in long_calls)
    assert not any(r.cache_prefix for r in short_calls)
    # the shared prefix is the same bytes in every batch of the group; only the items differ
    assert long_calls[0].system == long_calls[1].system
    assert long_calls[0].messages != long_calls[1].messages
