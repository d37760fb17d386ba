"""Costs: prices, usage, the ledger and its rollups, savings, reports, anomalies and the archive."""
