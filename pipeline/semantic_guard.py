"""Cheap checks that refuse a semantic cache hit between two prompts that mean different things.

An embedding puts "refund within 30 days" next to "refund within 60 days", "convert USD to EUR"
next to "convert EUR to USD" and "I received it" next to "I never received it". Those are the
false hits users meet (GPTCache #694, LiteLLM #12234), and no threshold separates them from true
paraphrases. So after the vector search finds a candidate, `blocks_semantic_hit` compares the
two prompts' concrete facts and refuses the hit when they differ:

- identifiers: URLs, e-mail addresses, codes such as ORD-1234, SKU-88-XL, #44127;
- dates: ISO and US dates, "March 3", 3月3日, weekdays, holidays, today/tomorrow/yesterday,
  this/next/last week, 今日/明日/昨日, 来週, 先月 ...;
- numbers: digits (full-width included), English number words, kanji numerals before a counter;
- negation present in one prompt only (not, n't, never, no, without; ない, ません, ず, 不要, 無効 ...);
- opposite terms (upgrade/downgrade, enable/disable, 有効/無効, 大きく/小さく ...);
- direction: the same words in another order ("from A to B" against "from B to A", AからB / BからA);
- named entities: capitalised names, acronyms and quoted text that the other prompt lacks, and
  katakana terms swapped for different ones (a katakana term merely added is allowed, since most
  katakana words are ordinary loanwords).

Everything is regular expressions over NFKC-normalised text, with the per-text work cached.
The guard only ever refuses: a hit it lets through still needs the embedder's threshold.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

__all__ = ["PromptFacts", "blocks_semantic_hit", "prompt_facts"]

_MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august",
                "september", "october", "november", "december")
_MONTH = (r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_OFFSET = {"this": "+0", "next": "+1", "coming": "+1", "last": "-1", "previous": "-1",
           "past": "-1", "今": "+0", "来": "+1", "先": "-1"}
_JA_WEEKDAY = {"月": "mon", "火": "tue", "水": "wed", "木": "thu", "金": "fri", "土": "sat",
               "日": "sun"}
_RELATIVE_DAYS = (
    (r"\b(?:the\s+)?day\s+after\s+tomorrow\b|明後日|あさって", "day+2"),
    (r"\b(?:the\s+)?day\s+before\s+yesterday\b|一昨日|おととい", "day-2"),
    (r"\btomorrow\b|明日|あした", "day+1"),
    (r"\byesterday\b|昨日|きのう", "day-1"),
    (r"\b(?:today|tonight|this\s+(?:morning|afternoon|evening))\b|今日|本日|きょう|今朝|今夜|今晩",
     "day+0"),
    (r"\bchristmas\s+eve\b|クリスマスイブ", "12-24"),
    (r"\bchristmas(?:\s+day)?\b|クリスマス", "12-25"),
    (r"\bnew\s+year'?s\s+eve\b|大晦日", "12-31"),
    (r"\bnew\s+year'?s?(?:\s+day)?\b|元日|元旦", "1-1"),
    (r"\bthanksgiving\b", "thanksgiving"),
    (r"\beaster\b", "easter"),
    (r"年末年始", "year-end holidays"),
    (r"お盆", "obon"),
    (r"ゴールデンウィーク|\bGW\b|\bgolden\s+week\b", "golden week"),
    (r"\bweekends?\b|週末", "weekend"),
)


def _ymd(y: str | None, m: str | None, d: str | None) -> str:
    year = (int(y) + 2000 if len(y) == 2 else int(y)) if y else None
    parts = [str(p) for p in (year, int(m) if m else None, int(d) if d else None) if p is not None]
    return ("y" if m is None else "") + "-".join(parts)


def _month(name: str) -> str:
    return str(next(i for i, full in enumerate(_MONTH_NAMES, 1) if full.startswith(name[:3].lower())))


DATE_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"\b(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\b"), lambda m: _ymd(*m.groups())),
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b"),
     lambda m: _ymd(m.group(3), m.group(1), m.group(2))),
    (re.compile(r"(?:(\d{4})\s*年\s*)?(\d{1,2})\s*月(?:\s*(\d{1,2})\s*日)?"),
     lambda m: _ymd(*m.groups())),
    (re.compile(r"(\d{4})\s*年(?!\s*間)"), lambda m: _ymd(m.group(1), None, None)),
    (re.compile(rf"\b{_MONTH}\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}}))?", re.I),
     lambda m: _ymd(m.group(3), _month(m.group(1)), m.group(2))),
    (re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b(?:,?\s+(\d{{4}}))?", re.I),
     lambda m: _ymd(m.group(3), _month(m.group(2)), m.group(1))),
    (re.compile(r"\b(" + "|".join(n for n in _MONTH_NAMES if n != "may") + r")\b(?:,?\s+(\d{4}))?",
                re.I), lambda m: _ymd(m.group(2), _month(m.group(1)), None)),
    (re.compile(r"\b(?:in|of|for|since|until|by|from|during|early|mid|late)\s+May\b"),
     lambda m: "5"),
    (re.compile(r"\b(this|next|coming|last|previous|past)\s+(week(?:end)?|month|year|quarter)\b",
                re.I), lambda m: f"{m.group(2).lower()}{_OFFSET[m.group(1).lower()]}"),
    (re.compile(r"([今来先])週末"), lambda m: f"weekend{_OFFSET[m.group(1)]}"),
    (re.compile(r"([今来先])(週|月)"),
     lambda m: f"{'week' if m.group(2) == '週' else 'month'}{_OFFSET[m.group(1)]}"),
    (re.compile(r"今年|本年"), lambda m: "year+0"),
    (re.compile(r"来年"), lambda m: "year+1"),
    (re.compile(r"去年|昨年"), lambda m: "year-1"),
    *((re.compile(p, re.I), lambda m, k=k: k) for p, k in _RELATIVE_DAYS),
    (re.compile(r"\b(mon|tues|wednes|thurs|fri|satur|sun)days?\b", re.I),
     lambda m: "wd:" + m.group(1).lower()[:3]),
    (re.compile(r"([月火水木金土日])曜(?:日)?"), lambda m: "wd:" + _JA_WEEKDAY[m.group(1)]),
)

EN_NUMBER_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12,
}  # "one", "first" and "second" are left out: "which one", "first time", "30 seconds"
JA_NUMERAL_COUNTERS = ("個|つ|人|名|日|月|年|時間|時|分|秒|週間|週|ヶ月|か月|カ月|ヵ月|回|件|円|本|枚|"
                       "台|冊|泊|歳|才|階|点|段|倍|割|杯|着|部屋|ドル|箱|袋|口|社|店|席|晩|食|位|番目|度目")
# Words in which a numeral kanji is no number: 一緒 "together", 十分 "enough", 一時停止 "pause".
JA_NUMERAL_NEUTRAL = re.compile(
    r"一緒|一番|一度|一部|一般|一覧|一括|一旦|一応|一時停止|一時的|一時保存|一文|統一|唯一|万一|"
    r"十分(?!間)|一切|一定|一方|一致|一律|同一|単一|一日中|一人暮らし|一連|一昨日"
)

EN_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nothing|nobody|nowhere|neither|nor|without|cannot|unable|avoid\w*|"
    r"fail|fails|failed|failure|cant|dont|doesnt|didnt|wont|isnt|arent|wasnt|werent|havent|"
    r"hasnt|hadnt|shouldnt|wouldnt|couldnt)\b|n't\b"
)
# Hedges and idioms that carry no negation of the request itself.
EN_NEGATION_NEUTRAL = re.compile(
    r"\bnot\s+(?:sure|certain|only)\b|\bno\s+(?:idea|problem|worries|later|earlier|more|less|"
    r"fewer)\b|\b(?:do|does|did)(?:n't|\s+not)\s+(?:know|understand|remember|recall)\b|"
    r"\b(?:can't|cannot|can\s+not)\s+(?:remember|recall)\b|\bno\.\s*\d|\bwhether\s+or\s+not\b|"
    r"\bif\s+not\b"
)
JA_NEGATION = re.compile(
    r"な(?:い|く(?![しす])|かっ|けれ|きゃ)|ません|(?<=[ぁ-ゖ])ず(?:に|、|。|\s|$)|無い|無く|無し|なし|"
    r"不要|不可|不能|不在|不足|不十分|不適|未対応|非対応|非表示|非公開|未着|未到着|未払|未納|未完了|"
    r"未使用|未開封|無効|無料|無理"
)
JA_NEGATION_NEUTRAL = re.compile(
    r"(?<![ぁ-ゖ])まず|必ず|ずつ|ずっと|すみません|すいません|申し訳(?:ございません|ありません|ない)|"
    r"(?:構|かま)いません|(?:いただけ|頂け|もらえ|貰え|くれ)(?:ない|ません)(?:でしょう)?か|"
    r"(?:わから|分から|判ら)(?:ない|なく)|(?:わかり|分かり)ません|少な|危な|間もなく|ほどなく|"
    r"もてなし|なくし|なくす|つな[いがぎぐげ]|おこな"
)

_OPPOSITES = (
    ("upgrade/downgrade", r"\bupgrad", r"\bdowngrad"),
    ("enable/disable", r"\benabl|\bturn(?:s|ed|ing)?\s+on\b|\bswitch(?:es|ed|ing)?\s+on\b|\bactivat|"
     r"有効|オン", r"\bdisabl|\bturn(?:s|ed|ing)?\s+off\b|\bswitch(?:es|ed|ing)?\s+off\b|"
     r"\bdeactivat|無効|オフ"),
    ("more/less", r"\bhigher\b|\bbigger\b|\blarger\b|\bgreater\b|\bmore\s+than\b|\bover\b|\babove\b|"
     r"\bat\s+least\b|以上|超え|より多", r"\blower\b|\bsmaller\b|\bless\s+than\b|\bfewer\s+than\b|"
     r"\bunder\b|\bbelow\b|\bat\s+most\b|以下|未満|より少"),
    ("increase/decrease", r"\bincreas|\braise|増や|増加|増額|引き上げ|大き",
     r"\bdecreas|\breduc|減ら|減少|減額|引き下げ|小さ"),
    ("add/remove", r"\badd(?:s|ed|ing)?\b|追加", r"\bremov|\bdelet|削除|取り除"),
    ("import/export", r"\bimport|インポート", r"\bexport|エクスポート"),
    ("upload/download", r"\bupload|アップロード", r"\bdownload|ダウンロード"),
    ("buy/sell", r"\bbuy|\bbought\b|\bpurchas|購入", r"\bsell|\bsold\b|売却"),
    ("deposit/withdraw", r"\bdeposit|入金|預け入れ", r"\bwithdr[ae]w|出金|引き出"),
    ("include/exclude", r"\binclud", r"\bexclud"),
    ("lock/unlock", r"\block(?:s|ed|ing)?\b", r"\bunlock"),
    ("subscribe/unsubscribe", r"\bsubscrib(?:e|es|ed|ing)\b", r"\bunsubscrib"),
    ("install/uninstall", r"\binstall", r"\buninstall"),
    ("before/after", r"\bbefore\b|前に|以前", r"\bafter\b|後に|以降|あとで|後で"),
    ("earlier/later", r"\bearl(?:y|ier)\b|早く|早め|早い", r"\blater?\b|遅く|遅め|遅い"),
    ("accept/reject", r"\baccept|\bapprov|承認", r"\breject|\bdeclin|\brefus|\bdenied\b|\bdeny|却下"),
    ("credit/debit", r"\bcredit\b", r"\bdebit\b"),
    ("open/close", r"\bopen", r"\bclos"),
    ("log in/log out", r"\blog(?:ged)?\s*in\b|\bsign(?:ed)?\s*in\b|ログイン",
     r"\blog(?:ged)?\s*out\b|\bsign(?:ed)?\s*out\b|ログアウト"),
    ("start/stop", r"\bstart|\bbegin|\bresum|開始|再開", r"\bstop|\bpaus|停止|終了"),
    ("cheap/expensive", r"\bcheap|\binexpensive|安い|安く", r"(?<!in)expensive\b|\bpric(?:ey|ier)\b|高い|高く"),
    ("fast/slow", r"\bfast|\bquick", r"\bslow"),
    ("positive/negative", r"\bpositive\b|ポジティブ", r"\bnegative\b|ネガティブ"),
    ("maximum/minimum", r"\bmax(?:imum)?\b|最大|上限", r"\bmin(?:imum)?\b|最小|下限"),
)
ANTONYMS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (f"{name}:{side}", re.compile(pattern))
    for name, a, b in _OPPOSITES for side, pattern in (("a", a), ("b", b))
)
EN_STOPWORDS = frozenset("a an the my your our their his her its this that these those please some "
                         "any".split())
# Words that frame a question without being its subject: a prompt pair that differs only in
# these ("How do I" / "How can I", "change" / "update") may still be a paraphrase.
_FRAME_WORDS = EN_STOPWORDS | frozenset(
    "do does did can could would will should shall might must is are was were be been am i me we "
    "us you it they them how what where when why which who there here to of in on for with at by "
    "from and or if so just also still get change update edit modify set make find see check know "
    "tell show give want need like help kindly possible way able let ok i'd i'm i'll".split()
)

_KANJI = "\u3400-\u4dbf\u4e00-\u9fff々〆ヵヶ"
_KATA = "\u30a1-\u30fa\u30fc"

_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'「」『』、。]+", re.I)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_CODE = re.compile(r"(?<![A-Za-z0-9_-])(?:[A-Za-z][A-Za-z0-9_-]*\d[A-Za-z0-9_-]*|#\d+)")
_NUMBER = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(万|億)?")
_KANJI_NUMERAL = re.compile(rf"[〇零一二三四五六七八九十百千万]+(?=(?:{JA_NUMERAL_COUNTERS}))")
_EN_NUMBER_WORD = re.compile(
    r"\b(?:(" + "|".join(w for w in EN_NUMBER_WORDS if EN_NUMBER_WORDS[w] >= 20) + r")-)?("
    + "|".join(sorted(EN_NUMBER_WORDS, key=len, reverse=True)) + r")\b"
)
_QUOTED = re.compile(r"\"([^\"]{2,})\"|“([^”]{2,})”|「([^」]{2,})」|『([^』]{2,})』")
_CAPITALISED = re.compile(r"(?:[A-Z][A-Za-z'-]*|[a-z]+[A-Z][A-Za-z'-]*)(?:[ \t]+[A-Z][A-Za-z'-]*)*")
_KATAKANA_RUN = re.compile(rf"[{_KATA}]{{2,}}")
_EN_TOKEN = re.compile(r"[a-z0-9$%]+(?:[.,'][a-z0-9]+)*")
# A Japanese term with the particle after it: scrambled word order keeps the particles.
_JA_TOKEN = re.compile(rf"(?:[{_KANJI}]+|[{_KATA}]+|[A-Za-z]+|\d+(?:[.,]\d+)*)[ぁ-ゖ]?")
_JA_TEXT = re.compile(rf"[ぁ-ゖ{_KANJI}{_KATA}]")
_EN_FROM_TO = re.compile(
    r"\bfrom\s+(?:(?:the|my|a|an|your|our)\s+)?([\w$.-]+)(?:\s+[\w-]+){0,2}?\s+(?:to|into)\s+"
    r"(?:(?:the|my|a|an|your|our)\s+)?([\w$.-]+)"
)
_EN_X_TO_Y = re.compile(r"([\w$.-]+)\s+(?:to|into|->|→)\s+(?:(?:the|my|a|an)\s+)?([\w$.-]+)")
_EN_INSTEAD = re.compile(r"([\w$.-]+)\s+instead\s+of\s+([\w$.-]+)")
_JA_RUN = rf"[{_KANJI}{_KATA}A-Za-z]+"
_JA_DIRECTION = re.compile(
    rf"({_JA_RUN})(?:から|を)[^{_KANJI}{_KATA}A-Za-z]{{0,2}}?({_JA_RUN})(?:に|へ|まで)"
)
_SENTENCE_BREAK = set(".!?:;\"“「『(\n")
_PRONOUN_I = re.compile(r"^I(?:'m|'d|'ll|'ve)?$")


@dataclass(frozen=True)
class PromptFacts:
    """The concrete facts of one prompt that a semantic hit must not change."""

    text: str
    ids: frozenset[str]
    dates: frozenset[str]
    numbers: frozenset[str]
    negated: bool
    antonyms: frozenset[str]
    directions: frozenset[tuple[str, str]]
    content: tuple[str, ...]
    names: frozenset[str]
    quoted: frozenset[str]
    katakana: frozenset[str]


def blocks_semantic_hit(query: str, cached: str) -> str | None:
    """Return why `cached`'s answer must not be served for `query`, or None if nothing forbids it.

    Both arguments are prompt texts (for a chat, the last user turn is what matters most, but any
    text works). The reason is short and safe to log: it names the differing facts.
    """
    if query == cached:
        return None
    q, c = prompt_facts(query), prompt_facts(cached)
    for label, mine, theirs in (("ids", q.ids, c.ids), ("dates", q.dates, c.dates),
                                ("numbers", q.numbers, c.numbers)):
        if mine != theirs:
            return f"{label} differ: {_show(mine - theirs)} vs {_show(theirs - mine)}"
    if q.negated != c.negated:
        which = "query" if q.negated else "cached prompt"
        return f"negation only in the {which}"
    clash = _antonym_clash(q.antonyms, c.antonyms)
    if clash:
        return f"opposite terms: {clash}"
    if _reversed(q, c):
        return "same terms in the opposite direction or order"
    swap = _substitution(q.text, c.text)
    if swap:
        return f"only the subject differs: {swap[0]!r} vs {swap[1]!r}"
    missing = _unmatched(q.names | q.quoted, c.text) | _unmatched(c.names | c.quoted, q.text)
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
    rest = _mask(norm, JA_NUMERAL_NEUTRAL)
    rest = _KANJI_NUMERAL.sub(lambda m: f" {_kanji_to_int(m.group())}", rest)
    urls = _take(_URL, rest, lambda m: m.group().rstrip(".,;:!?)").lower())
    rest = _URL.sub(" ", rest)
    emails = _take(_EMAIL, rest, lambda m: m.group().lower())
    rest = _EMAIL.sub(" ", rest)
    codes = _take(_CODE, rest, lambda m: m.group().strip("-_").lower())
    rest = _CODE.sub(" ", rest)
    dates: set[str] = set()
    for pattern, key in DATE_PATTERNS:
        dates |= _take(pattern, rest, key)
        rest = pattern.sub(" ", rest)
    if {"wd:sat", "wd:sun"} <= dates:  # "weekends" == "Saturdays and Sundays"
        dates = (dates - {"wd:sat", "wd:sun"}) | {"weekend"}
    rest_lower = _EN_NUMBER_WORD.sub(_number_word, rest.lower())
    numbers = _take(_NUMBER, rest_lower, _number_key)
    return PromptFacts(
        text=lower,
        ids=frozenset(urls | emails | codes),
        dates=frozenset(dates),
        numbers=frozenset(numbers),
        negated=_negated(lower),
        antonyms=frozenset(name for name, pattern in ANTONYMS if pattern.search(lower)),
        directions=frozenset(_directions(lower)),
        content=tuple(t for t in _EN_TOKEN.findall(lower) if t not in EN_STOPWORDS),
        names=frozenset(_names(rest)),
        quoted=frozenset(next(g for g in m.groups() if g).strip().lower()
                         for m in _QUOTED.finditer(norm)),
        katakana=frozenset(_KATAKANA_RUN.findall(norm)),
    )


def _take(pattern: re.Pattern[str], text: str, key: object) -> set[str]:
    return {k for m in pattern.finditer(text) if (k := key(m))}  # type: ignore[operator]


def _mask(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: "\u3000" * len(m.group()), text)


def _show(items: frozenset[str] | set[str]) -> str:
    return ", ".join(sorted(items)[:4]) or "none"


def _number_key(m: re.Match[str]) -> str:
    whole, frac, scale = m.group(1).replace(",", ""), m.group(2) or "", m.group(3)
    try:
        value = Decimal(whole + frac) * {"万": 10_000, "億": 100_000_000}.get(scale or "", 1)
    except InvalidOperation:
        return whole + frac
    return format(value.normalize(), "f")


def _number_word(m: re.Match[str]) -> str:
    tens, unit = m.group(1), m.group(2)
    return f" {EN_NUMBER_WORDS[unit] + (EN_NUMBER_WORDS[tens] if tens else 0)} "


def _kanji_to_int(numeral: str) -> int:
    digits = {"〇": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5,
              "六": 6, "七": 7, "八": 8, "九": 9}
    units = {"十": 10, "百": 100, "千": 1000}
    total, section, current = 0, 0, 0
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


def _negated(lower: str) -> bool:
    en = EN_NEGATION_NEUTRAL.sub(" ", lower)
    ja = _mask(lower, JA_NEGATION_NEUTRAL)
    return bool(EN_NEGATION.search(en) or JA_NEGATION.search(ja))


def _antonym_clash(mine: frozenset[str], theirs: frozenset[str]) -> str | None:
    for word in sorted(mine - theirs):
        base, _, side = word.partition(":")
        other = f"{base}:{'b' if side == 'a' else 'a'}"
        if other in theirs and other not in mine:
            return base.replace("/", " vs ")
    return None


def _directions(lower: str) -> set[tuple[str, str]]:
    pairs = {(m.group(1), m.group(2)) for m in _EN_FROM_TO.finditer(lower)}
    pairs |= {(m.group(1), m.group(2)) for m in _EN_X_TO_Y.finditer(lower)}
    pairs |= {(m.group(2), m.group(1)) for m in _EN_INSTEAD.finditer(lower)}
    pairs |= {(m.group(1), m.group(2)) for m in _JA_DIRECTION.finditer(lower)}
    return {(a.strip(".$"), b.strip(".$")) for a, b in pairs if a.strip(".$") != b.strip(".$")}


def _reversed(q: PromptFacts, c: PromptFacts) -> bool:
    if any((b, a) in c.directions for a, b in q.directions):
        return True
    # The same content words in another order: "points for a gift card" / "a gift card for points".
    if len(q.content) >= 2 and sorted(q.content) == sorted(c.content) and q.content != c.content:
        return True
    q_ja, c_ja = _JA_TOKEN.findall(q.text), _JA_TOKEN.findall(c.text)
    return False if q_ja == c_ja else _swapped(q_ja, c_ja)


def _swapped(q_tokens: list[str], c_tokens: list[str]) -> bool:
    """True when the texts differ only by two tokens trading places (東京…大阪 / 大阪…東京)."""
    if len(q_tokens) != len(c_tokens) or sorted(q_tokens) != sorted(c_tokens):
        return False
    diff = [i for i, (a, b) in enumerate(zip(q_tokens, c_tokens)) if a != b]
    return len(diff) == 2


def _substitution(q_text: str, c_text: str) -> tuple[str, str] | None:
    """The two differing spans when the prompts are one frame with one content slot swapped.

    "Is the blue version in stock?" / "Is the red version in stock?": the shared frame dominates
    the embedding, so the similarity says nothing about whether the slot change matters.
    """
    japanese = bool(_JA_TEXT.search(q_text) or _JA_TEXT.search(c_text))
    if japanese:
        q_seq = [ch for ch in q_text if not ch.isspace()]
        c_seq = [ch for ch in c_text if not ch.isspace()]
        max_span, joiner = 6, ""
    else:
        q_seq, c_seq = _EN_TOKEN.findall(q_text), _EN_TOKEN.findall(c_text)
        max_span, joiner = 3, " "
    n = min(len(q_seq), len(c_seq))
    prefix = next((i for i in range(n) if q_seq[i] != c_seq[i]), n)
    suffix = next((i for i in range(n - prefix) if q_seq[-1 - i] != c_seq[-1 - i]), n - prefix)
    q_span, c_span = q_seq[prefix : len(q_seq) - suffix], c_seq[prefix : len(c_seq) - suffix]
    if not q_span or not c_span or max(len(q_span), len(c_span)) > max_span:
        return None
    if prefix + suffix < 0.6 * max(len(q_seq), len(c_seq)):
        return None
    if japanese:
        content = re.compile(rf"[{_KANJI}{_KATA}A-Za-z]")
        has_content = [any(content.match(ch) for ch in span) for span in (q_span, c_span)]
    else:
        has_content = [any(t not in _FRAME_WORDS for t in span) for span in (q_span, c_span)]
    return (joiner.join(q_span), joiner.join(c_span)) if all(has_content) else None


def _names(text: str) -> set[str]:
    """Capitalised names, acronyms and camelCase product names; sentence-initial words skipped."""
    names: set[str] = set()
    japanese = bool(_JA_TEXT.search(text))  # Japanese has no sentence-initial capitals
    for m in _CAPITALISED.finditer(text):
        words = m.group().split()
        before = text[: m.start()].rstrip()
        sentence_start = not japanese and (not before or before[-1] in _SENTENCE_BREAK)
        if sentence_start and len(words) == 1 and not _is_marked(words[0]):
            continue
        if sentence_start and not _is_marked(words[0]):
            words = words[1:]
        words = [w for w in words if not _PRONOUN_I.match(w)]
        if words and (words[0][0].isupper() or _is_marked(words[0])):
            names.add(re.sub(r"'s$", "", " ".join(words)).lower())
    return {n for n in names if len(n) > 1}


def _is_marked(word: str) -> bool:
    """An acronym (API, SSD) or an internal capital (iPhone, PayPal): a name even at a start."""
    letters = [ch for ch in word if ch.isalpha()]
    return len(letters) >= 2 and any(ch.isupper() for ch in letters[1:])


def _unmatched(terms: frozenset[str], other_text: str) -> set[str]:
    return {t for t in terms if t.lower() not in other_text}
