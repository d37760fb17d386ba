"""The parts a component needs to make provider calls of its own and pay for them in the ledger
(grey-zone verification, the packing audit, the batch executor)."""

from __future__ import annotations

from redis.asyncio import Redis

from pipeline.config.settings import Settings
from pipeline.costs.ledger import Ledger
from pipeline.costs.prices import PriceTable
from pipeline.keys import Keys
from pipeline.providers.chain import ProviderChain


class PaidCaller:
    """Holds the parts; a subclass adds its own in `setup`."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        keys: Keys,
        chain: ProviderChain,
        prices: PriceTable,
        ledger: Ledger,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keys
        self.chain = chain
        self.prices = prices
        self.ledger = ledger
        self.setup()

    def setup(self) -> None:
        """What a subclass sets up once its parts are in place."""
