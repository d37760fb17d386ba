"""Built-in defaults of the routing and packing tables: tiers, task tiers, answer and batch sizes.

A TOML file replaces any of these tables as a whole (`tiers`, `task_tiers`, `default_max_tokens`,
`max_items`).
"""

from __future__ import annotations

DEFAULT_TIERS: dict[str, tuple[str, ...]] = {
    "fast_cheap": ("gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash"),
    "balanced": ("gpt-4.1-mini", "claude-3-5-haiku-latest", "gemini-2.5-flash"),
    "high_quality": ("gpt-4o", "claude-sonnet-4-0", "gemini-2.5-pro"),
    "best": ("gpt-4.1", "claude-opus-4-0", "gemini-2.5-pro"),
}

DEFAULT_TASK_TIERS: dict[str, str] = {
    "general": "balanced",
    "faq": "fast_cheap",
    "classification": "fast_cheap",
    "sentiment": "fast_cheap",
    "yes_no": "fast_cheap",
    "extraction": "fast_cheap",
    "short_answer": "fast_cheap",
    "summary": "balanced",
    "long_summary": "balanced",
    "translation": "balanced",
    "article": "high_quality",
    "code_snippet": "balanced",
    "full_code": "high_quality",
    "analysis": "high_quality",
}

DEFAULT_MAX_TOKENS: dict[str, int] = {
    "general": 400,
    "faq": 150,
    "classification": 10,
    "sentiment": 5,
    "yes_no": 3,
    "extraction": 100,
    "short_answer": 50,
    "summary": 200,
    "long_summary": 500,
    "translation": 400,
    "article": 1000,
    "code_snippet": 300,
    "full_code": 2000,
    "analysis": 800,
}

# Packing many long answers into one call degrades them; short, uniform answers pack well.
DEFAULT_MAX_ITEMS: dict[str, int] = {
    "general": 8,
    "faq": 10,
    "classification": 25,
    "sentiment": 25,
    "yes_no": 25,
    "extraction": 15,
    "short_answer": 15,
    "summary": 6,
    "long_summary": 3,
    "translation": 8,
    "article": 1,
    "code_snippet": 4,
    "full_code": 1,
    "analysis": 2,
}
