"""Wiring: every component a producer or a worker needs, built once from `Settings`."""

from __future__ import annotations

from redis.asyncio import Redis

from pipeline.budgets.admission import Admission
from pipeline.budgets.breaker import Budgets
from pipeline.cache import ResponseCache
from pipeline.cache.grey import GreyZone
from pipeline.cache.verify import Verifier
from pipeline.config.settings import Settings
from pipeline.core.executor import BatchExecutor
from pipeline.core.runs import RunStore
from pipeline.costs.ledger import Ledger
from pipeline.costs.prices import PriceTable
from pipeline.keys import Keys
from pipeline.packing.queue import Packer
from pipeline.providers import build_providers
from pipeline.providers.chain import ProviderChain
from pipeline.routing.router import Router


class Pipeline:
    """The library's components over one Redis connection pool."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.key_prefix)
        self.prices = PriceTable(settings.prices)
        self.providers = build_providers(settings)
        self.chain = ProviderChain(self.providers, settings, redis=redis, keys=self.keys)
        self.router = Router(settings, self.chain, self.prices)
        self.packer = Packer(redis, settings, self.keys)
        self.runs = RunStore(redis, self.keys, ttl_s=settings.results_ttl_s)
        self.ledger = Ledger(redis, self.keys)
        self.budgets = Budgets(redis, settings, self.keys, self.prices)
        self.admission = Admission(self.budgets, self.router)
        self.cache = ResponseCache(redis, settings, self.keys)
        self.executor = BatchExecutor(
            redis,
            settings,
            self.keys,
            self.chain,
            self.prices,
            self.runs,
            self.ledger,
            budgets=self.budgets,  # one Budgets for admission, calls and lost-call settles
        )
        self.executor.cache = self.cache
        if settings.cache_semantic_verify and self.cache.semantic is not None:
            verifier = Verifier(redis, settings, self.keys, self.chain, self.prices, self.ledger)
            self.cache.open_grey_zone()
            self.executor.grey = GreyZone(self.cache, verifier, self.runs, self.ledger, self.prices)

    @property
    def simulated(self) -> bool:
        return all(p.simulated for p in self.providers)

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()
        await self.cache.aclose()


def connect_redis(url: str) -> Redis:
    """A client for `url` (redis://, rediss:// or unix://)."""
    client: Redis = Redis.from_url(url)
    return client
