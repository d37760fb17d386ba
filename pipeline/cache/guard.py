"""Cheap checks that refuse a semantic cache hit between prompts that mean different things.

Embeddings put "refund within 30 days" next to "within 60 days", "convert USD to EUR" next to
"convert EUR to USD", "I received it" next to "I never received it" (GPTCache #694, LiteLLM
#12234), and no threshold separates those from true paraphrases. So `blocks_semantic_hit`
compares the concrete facts of the query and the cached prompt and refuses when they differ:
ids (URLs, e-mails, ORD-1234, #44127), dates (ISO, "March 3", 3月3日, weekdays, holidays,
tomorrow, 来週 ...), numbers (full-width digits, number words, "a dozen", kanji numerals
before a counter), relations (within / after, over / under, at least / at most; 以内 / 以降,
以上 / 未満 ...), actions when both prompts name one (change / cancel / pause; 変更 /
キャンセル ...), a negation in one prompt only (not, n't, never, without; ない, ません, ず,
不要, 無効 ...), a repetition in one prompt only ("again", "reissue"; もう一度, 再発行: a
receipt vs a second one), opposite terms (upgrade/downgrade, apply/remove, 有効/無効),
direction ("from A to B" / "from B to A", AからB), one content slot changed or added in a
shared frame ("the blue version" / "the red version", 注文/予約をキャンセル), and names:
capitalised words, acronyms, quoted text and kanji place names (梅田店) the other prompt lacks,
or katakana terms swapped for others (a katakana word merely added is allowed).

All of it is regular expressions over NFKC-normalised text, and a text's facts are cached. The
guard only refuses: a hit it lets through must still clear the embedder's threshold.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from pipeline.cache.lexicon import (
    ACTION,
    ACTION_NAMES,
    CAPITALISED,
    CODE,
    DATES,
    DOZEN,
    EMAIL,
    EN_FROM_TO,
    EN_INSTEAD,
    EN_NEGATION,
    EN_NEGATION_NEUTRAL,
    EN_NUMBER_WORD,
    EN_OPPOSITE,
    EN_TOKEN,
    EN_X_TO_Y,
    FRAME_WORDS,
    JA_CONTENT,
    JA_DIRECTION,
    JA_NEGATION,
    JA_NEGATION_NEUTRAL,
    JA_NUMERAL_NEUTRAL,
    JA_OPPOSITES,
    JA_PLACE,
    JA_TEXT,
    JA_TOKEN,
    KANJI_NUMERAL,
    KATAKANA_RUN,
    NUMBER,
    NUMBER_VALUES,
    PRONOUN_I,
    QUOTED,
    RELATION,
    RELATION_NAMES,
    REPETITION,
    SENTENCE_BREAK,
    SIDES,
    STOPWORDS,
    URL,
    date_key,
)

__all__ = ["PromptFacts", "blocks_semantic_hit", "prompt_facts"]


@dataclass(frozen=True)
class PromptFacts:
    """The concrete facts of one prompt that a semantic hit must not change."""

    text: str
    ids: frozenset[str]
    dates: frozenset[str]
    numbers: frozenset[str]
    relations: frozenset[str]
    actions: frozenset[str]
    negated: bool
    repeated: bool
    opposites: frozenset[str]
    directions: frozenset[tuple[str, str]]
    content: tuple[str, ...]
    names: frozenset[str]
    katakana: frozenset[str]
    skeleton: str


def blocks_semantic_hit(query: str, cached: str) -> str | None:
    """Return why `cached`'s answer must not be served for `query`, or None if nothing forbids it.

    Both arguments are prompt texts. The reason names the differing facts; it contains no more
    than the two prompts do, so log it where the prompts may be logged.
    """
    if query == cached:
        return None
    q, c = prompt_facts(query), prompt_facts(cached)
    for label in ("ids", "dates", "numbers"):
        mine, theirs = getattr(q, label), getattr(c, label)
        if mine != theirs:
            return f"{label} differ: {_show(mine - theirs)} vs {_show(theirs - mine)}"
    if q.relations != c.relations:
        return f"relations differ: {_show(q.relations)} vs {_show(c.relations)}"
    if q.negated != c.negated:
        return f"negation only in the {'query' if q.negated else 'cached prompt'}"
    if q.repeated != c.repeated:
        return f"repetition only in the {'query' if q.repeated else 'cached prompt'}"
    if q.actions and c.actions and q.actions != c.actions:
        return f"actions differ: {_show(q.actions)} vs {_show(c.actions)}"
    clash = _opposite_clash(q.opposites, c.opposites)
    if clash:
        return f"opposite terms: {clash}"
    if _reversed(q, c):
        return "same terms in the opposite direction or order"
    slot = _changed_slot(q.skeleton, c.skeleton)
    if slot:
        return f"only one part differs: {slot[0]!r} vs {slot[1]!r}"
    missing = _unmatched(q.names, c.text) | _unmatched(c.names, q.text)
    if missing:
        return f"names or quoted text differ: {_show(missing)}"
    mine_kata, theirs_kata = _unmatched(q.katakana, c.text), _unmatched(c.katakana, q.text)
    if mine_kata and theirs_kata:
        return f"katakana terms differ: {_show(mine_kata)} vs {_show(theirs_kata)}"
    return None


@lru_cache(maxsize=8192)
def prompt_facts(text: str) -> PromptFacts:
    """Extract the facts of `text` (cached: a cached prompt is compared again and again)."""
    norm = unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'")
    lower = norm.lower()
    rest = KANJI_NUMERAL.sub(lambda m: f" {_kanji_to_int(m[0])}", _mask(norm, JA_NUMERAL_NEUTRAL))
    ids: set[str] = set()
    for pattern in (URL, EMAIL, CODE):
        ids |= {m[0].rstrip(".,;:!?)").strip("-_").lower() for m in pattern.finditer(rest)}
        rest = pattern.sub(" ", rest)
    dates: set[str] = set()
    for pattern, kind in DATES:
        found = {date_key(m, kind) for m in pattern.finditer(rest)}
        if found:
            dates |= found
            rest = pattern.sub(" ", rest)
    if {"wd:sat", "wd:sun"} <= dates:  # "weekends" == "Saturdays and Sundays"
        dates = (dates - {"wd:sat", "wd:sun"}) | {"weekend"}
    # The text without its ids and dates, numbers in one spelling: "3 days" == "three days".
    spelled = DOZEN.sub(_dozen, EN_NUMBER_WORD.sub(_number_word, rest.lower()))
    skeleton = NUMBER.sub(lambda m: f" {_number_key(m)} ", spelled)
    numbers = {_number_key(m) for m in NUMBER.finditer(skeleton)}
    quoted = {next(g for g in m.groups() if g).strip().lower() for m in QUOTED.finditer(norm)}
    return PromptFacts(
        text=lower,
        ids=frozenset(ids),
        dates=frozenset(dates),
        numbers=frozenset(numbers),
        relations=frozenset(
            RELATION_NAMES[int(str(m.lastgroup)[1:])] for m in RELATION.finditer(skeleton)
        ),
        actions=frozenset(ACTION_NAMES[int(str(m.lastgroup)[1:])] for m in ACTION.finditer(lower)),
        negated=bool(
            EN_NEGATION.search(EN_NEGATION_NEUTRAL.sub(" ", lower))
            or JA_NEGATION.search(_mask(lower, JA_NEGATION_NEUTRAL))
        ),
        repeated=bool(REPETITION.search(lower)),
        opposites=frozenset(
            {SIDES[int(str(m.lastgroup)[1:])][0] for m in EN_OPPOSITE.finditer(lower)}
            | {side for side, term in JA_OPPOSITES if term in lower}
        ),
        directions=frozenset(_directions(lower)),
        content=tuple(t for t in EN_TOKEN.findall(lower) if t not in STOPWORDS),
        names=frozenset(_names(rest) | quoted | set(JA_PLACE.findall(norm))),
        katakana=frozenset(KATAKANA_RUN.findall(norm)),
        skeleton=skeleton,
    )


def _mask(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: "\u3000" * len(m[0]), text)


def _show(items: frozenset[str] | set[str]) -> str:
    return ", ".join(sorted(items)[:4]) or "none"


def _number_key(m: re.Match[str]) -> str:
    digits = m[1].replace(",", "") + (m[2] or "")
    try:
        value = Decimal(digits) * {"万": 10_000, "億": 100_000_000}.get(m[3] or "", 1)
    except InvalidOperation:
        return digits
    return format(value.normalize(), "f")


def _number_word(m: re.Match[str]) -> str:
    return f" {int(NUMBER_VALUES[m[2]]) + (int(NUMBER_VALUES[m[1]]) if m[1] else 0)} "


def _dozen(m: re.Match[str]) -> str:
    return f" {6 if m[1] else 12 * int(m[2] or 1)} "


def _kanji_to_int(numeral: str) -> int:
    digits = dict(zip("〇零一二三四五六七八九", (0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9), strict=True))
    units = {"十": 10, "百": 100, "千": 1000}
    total = section = current = 0
    for ch in numeral:
        if ch in digits:
            current = current * 10 + digits[ch]
        elif ch in units:
            section += (current or 1) * units[ch]
            current = 0
        else:  # 万
            total += (section + current or 1) * 10_000
            section = current = 0
    return total + section + current


def _opposite_clash(mine: frozenset[str], theirs: frozenset[str]) -> str | None:
    for side in sorted(mine - theirs):
        name, _, which = side.partition(":")
        other = f"{name}:{'b' if which == 'a' else 'a'}"
        if other in theirs and other not in mine:
            return name.replace("/", " vs ")
    return None


def _directions(lower: str) -> set[tuple[str, str]]:
    pairs = {
        (m[1], m[2])
        for pattern in (EN_FROM_TO, EN_X_TO_Y, JA_DIRECTION)
        for m in pattern.finditer(lower)
    }
    pairs |= {(m[2], m[1]) for m in EN_INSTEAD.finditer(lower)}  # "A instead of B" = B -> A
    return {(a.strip(".$"), b.strip(".$")) for a, b in pairs if a.strip(".$") != b.strip(".$")}


def _reversed(q: PromptFacts, c: PromptFacts) -> bool:
    if any((b, a) in c.directions for a, b in q.directions):
        return True
    # The same content words in another order: "points for a gift card" / "a gift card for points".
    if len(q.content) >= 2 and q.content != c.content and sorted(q.content) == sorted(c.content):
        return True
    q_ja, c_ja = JA_TOKEN.findall(q.text), JA_TOKEN.findall(c.text)
    if q_ja == c_ja or sorted(q_ja) != sorted(c_ja):
        return False
    return sum(1 for a, b in zip(q_ja, c_ja, strict=True) if a != b) == 2  # two terms traded places


def _changed_slot(q_text: str, c_text: str) -> tuple[str, str] | None:
    """The differing spans when both prompts share one frame and only a content slot differs.

    "Is the blue version in stock?" / "Is the red version in stock?", 注文/予約をキャンセル,
    営業時間 / 京都店の営業時間: the shared frame dominates the embedding, so the similarity says
    nothing about whether the changed or added words matter, and they usually do.
    """
    japanese = bool(JA_TEXT.search(q_text) or JA_TEXT.search(c_text))
    if japanese:
        q_seq, c_seq = list("".join(q_text.split())), list("".join(c_text.split()))
    else:
        q_seq, c_seq = EN_TOKEN.findall(q_text), EN_TOKEN.findall(c_text)
    n = min(len(q_seq), len(c_seq))
    prefix = next((i for i in range(n) if q_seq[i] != c_seq[i]), n)
    suffix = next((i for i in range(n - prefix) if q_seq[-1 - i] != c_seq[-1 - i]), n - prefix)
    q_span, c_span = q_seq[prefix : len(q_seq) - suffix], c_seq[prefix : len(c_seq) - suffix]
    longest = max(len(q_seq), len(c_seq))
    if max(len(q_span), len(c_span)) > (8 if japanese else 3) or prefix + suffix < 0.6 * longest:
        return None
    if japanese:
        content = [any(JA_CONTENT.match(ch) for ch in span) for span in (q_span, c_span)]
    else:
        content = [any(t not in FRAME_WORDS for t in span) for span in (q_span, c_span)]
    # Content on either side decides: "change" (a frame word) for "cancel" changes the request.
    if any(content):
        joiner = "" if japanese else " "
        return joiner.join(q_span) or "(nothing)", joiner.join(c_span) or "(nothing)"
    return None


def _names(text: str) -> set[str]:
    """Capitalised names, acronyms and camelCase product names; sentence-initial words skipped."""
    names: set[str] = set()
    japanese = bool(JA_TEXT.search(text))  # Japanese has no sentence-initial capitals
    for m in CAPITALISED.finditer(text):
        words = m[0].split()
        before = text[: m.start()].rstrip()
        sentence_start = not japanese and (not before or before[-1] in SENTENCE_BREAK)
        if sentence_start and not _is_marked(words[0]):
            words = words[1:]
        words = [w for w in words if not PRONOUN_I.match(w)]
        if words:
            names.add(re.sub(r"'s$", "", " ".join(words)).lower())
    return {n for n in names if len(n) > 1}


def _is_marked(word: str) -> bool:
    """An acronym (API, SSD) or an inner capital (iPhone, PayPal): a name even at a start."""
    letters = [ch for ch in word if ch.isalpha()]
    return len(letters) >= 2 and any(ch.isupper() for ch in letters[1:])


def _unmatched(terms: frozenset[str], other_text: str) -> set[str]:
    return {t for t in terms if t.lower() not in other_text}
