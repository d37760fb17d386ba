"""Packing: the pending queue and its groups, the packed wire format, and whether packing pays."""
