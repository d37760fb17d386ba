"""Batchwise's state: the shared Redis at REDIS_URL or the embedded server, and its outages."""
