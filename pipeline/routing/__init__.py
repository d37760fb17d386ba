"""Routing: the cheapest model that meets a task's need, cascades, compression, estimates."""
