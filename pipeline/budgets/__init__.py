"""Budgets: the cost circuit breaker, the monthly pace, per-user quotas and admission."""
