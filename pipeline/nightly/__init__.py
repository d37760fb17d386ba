"""Nightly runs: the inbox of job files and the provider batch APIs at half price."""
