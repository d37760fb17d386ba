"""Prompt compression: shorter instructions, same task data.

Opt-in per task type (`Settings.compress_task_types`). Only the system prompt (the instructions)
is rewritten: politeness and filler are dropped and wordy phrases get their short form, in English
and Japanese. The task's own messages are never touched, so nothing the model must answer about
changes. Rules are conservative substitutions; a rewrite that would not save a token is discarded.
"""

from __future__ import annotations

import re

from pipeline.models import Task
from pipeline.tokens import count_tokens

# (pattern, replacement); applied in order, case-insensitively for English.
_EN_RULES: tuple[tuple[str, str], ...] = (
    (r"\bI would like you to\s+", ""),
    (r"\bI want you to\s+", ""),
    (r"\bI need you to\s+", ""),
    (r"\b(?:could|can|would) you(?: please)?\s+", ""),
    (r"\bit is (?:very |really |extremely )?important (?:that you |to )", ""),
    (r"\b(?:please )?make sure (?:that )?you(?:'re| are)\b", "be"),
    (r"\b(?:please )?make sure (?:that )?(?:you )?(?:to )?", ""),
    (r"\bbe sure to\s+", ""),
    (r"\bplease\s+", ""),
    (r",?\s*please\b", ""),
    (r"\bkindly\s+", ""),
    (r"\bin order to\b", "to"),
    (r"\bdue to the fact that\b", "because"),
    (r"\bin the event that\b", "if"),
    (r"\bat this point in time\b", "now"),
    (r"\bfor the purpose of\b", "for"),
    (r"\b(?:with regard to|with respect to|in regard to)\b", "about"),
    (r"\ba (?:large|great) number of\b", "many"),
    (r"\bis able to\b", "can"),
    (r"\bare able to\b", "can"),
    (r"\bas well as\b", "and"),
    (r"\bthe following\b", "these"),
    (r"\b(?:basically|actually|really|very|simply|truly|definitely|just)\s+", ""),
)
_JA_RULES: tuple[tuple[str, str], ...] = (
    (r"(?:恐れ入りますが|お手数ですが|申し訳ありませんが|すみませんが)、?", ""),
    (r"してくださいますよう(?:お願い(?:いた)?します|お願い申し上げます)", "してください"),
    (r"していただけ(?:ます|ません)(?:でしょう)?か[。？?]?", "してください。"),
    (r"するようにしてください", "してください"),
    (r"よう(?:に)?お願い(?:いた)?します", "こと"),
    (r"することが(?:重要|大切|必要)です", "すること"),
    (r"することができます", "できます"),
    (r"ことが可能です", "ことができます"),
    (r"(?:基本的に|とても|非常に|なお、|ちなみに、)", ""),
)
_EN = [(re.compile(p, re.IGNORECASE), r) for p, r in _EN_RULES]
_JA = [(re.compile(p), r) for p, r in _JA_RULES]
_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+|\n\s*)([a-z])")


def compress_instructions(text: str) -> str:
    """Instructions without filler, in their shorter phrasing (English and Japanese)."""
    out = text
    for pattern, replacement in _JA:
        out = pattern.sub(replacement, out)
    for pattern, replacement in _EN:
        out = pattern.sub(replacement, out)
    out = _SPACES.sub(" ", out)
    out = _SPACE_BEFORE_PUNCT.sub(r"\1", out)
    out = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), out)
    return "\n".join(line.strip() for line in out.split("\n")).strip()


def compress_task(task: Task) -> Task:
    """The task with its system prompt compressed; the messages stay byte for byte."""
    if not task.system:
        return task
    shorter = compress_instructions(task.system)
    if not shorter or count_tokens(shorter) >= count_tokens(task.system):
        return task
    return task.model_copy(update={"system": shorter})
