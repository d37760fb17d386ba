"""Cheap checks that refuse a semantic cache hit between prompts that mean different things.

Embeddings put "refund within 30 days" next to "within 60 days", "convert USD to EUR" next to
"convert EUR to USD", "I received it" next to "I never received it" (GPTCache #694, LiteLLM
#12234), and no threshold separates those from true paraphrases. So `blocks_semantic_hit`
compares the concrete facts of the query and the cached prompt and refuses when they differ:
ids (URLs, e-mails, ORD-1234, #44127), dates (ISO, "March 3", 3月3日, weekdays, holidays,
tomorrow, 来週 ...), numbers (full-width digits, number words, kanji numerals before a counter),
a negation in one prompt only (not, n't, never, without; ない, ません, ず, 不要, 無効 ...),
a repetition in one prompt only ("again", "reissue"; もう一度, 再発行: a receipt vs a second one),
opposite terms (upgrade/downgrade, 有効/無効), direction ("from A to B" / "from B to A", AからB),
one content slot changed or added in a shared frame ("the blue version" / "the red version",
注文/予約をキャンセル), and names: capitalised words, acronyms and quoted text the other prompt
lacks, or katakana terms swapped for others (a katakana word merely added is allowed).

All of it is regular expressions over NFKC-normalised text, and a text's facts are cached. The
guard only refuses: a hit it lets through must still clear the embedder's threshold.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

__all__ = ["PromptFacts", "blocks_semantic_hit", "prompt_facts"]

_KANJI = "\u3400-\u4dbf\u4e00-\u9fff々〆ヵヶ"
_KATA = "\u30a1-\u30fa\u30fc"
_MONTHS = "january february march april may june july august september october november december"
_MONTH = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_OFFSET = {"this": "+0", "next": "+1", "coming": "+1", "last": "-1", "previous": "-1"}
_OFFSET |= {"past": "-1", "今": "+0", "来": "+1", "先": "-1"}
_WEEKDAYS = dict(zip("月火水木金土日", "mon tue wed thu fri sat sun".split(), strict=True))

# pattern :: key. "ymd" builds the key from the groups y, m (or month name mon) and d; "rel"
# from off(set) and unit; "wd" from the weekday; anything else is the key itself.
_DATE_TABLE = r"""
\b(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})\b :: ymd
\b(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4}|\d{2})\b :: ymd
(?:(?P<y>\d{4})\s*年\s*)?(?P<m>\d{1,2})\s*月(?:\s*(?P<d>\d{1,2})\s*日)? :: ymd
(?P<y>\d{4})\s*年(?!\s*間) :: ymd
\b(?P<mon>MONTH)\.?\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?\b(?:,?\s+(?P<y>\d{4}))? :: ymd
\b(?P<d>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon>MONTH)\b(?:,?\s+(?P<y>\d{4}))? :: ymd
\b(?P<mon>january|february|march|april|june|july|august|september|october|november|december)\b(?:,?\s+(?P<y>\d{4}))? :: ymd
\b(?:in|of|for|since|until|by|from|during|early|mid|late)\s+May\b :: 5
\b(?P<off>this|next|coming|last|previous|past)\s+(?P<unit>week(?:end)?|month|year|quarter)\b :: rel
(?P<off>[今来先])(?P<unit>週末|週|月) :: rel
\b(?:the\s+)?day\s+after\s+tomorrow\b|明後日|あさって :: day+2
\b(?:the\s+)?day\s+before\s+yesterday\b|一昨日|おととい :: day-2
\btomorrow\b|明日|あした :: day+1
\byesterday\b|昨日|きのう :: day-1
\b(?:today|tonight|this\s+(?:morning|afternoon|evening))\b|今日|本日|きょう|今朝|今夜|今晩 :: day+0
今年|本年 :: year+0
来年 :: year+1
去年|昨年 :: year-1
\bchristmas\s+eve\b|クリスマスイブ :: 12-24
\bchristmas(?:\s+day)?\b|クリスマス :: 12-25
\bnew\s+year'?s\s+eve\b|大晦日 :: 12-31
\bnew\s+year'?s?(?:\s+day)?\b|元日|元旦 :: 1-1
\bthanksgiving\b :: thanksgiving
\beaster\b :: easter
年末年始 :: year-end holidays
お盆 :: obon
ゴールデンウィーク|\bgolden\s+week\b :: golden week
\bweekends?\b|週末 :: weekend
\b(?P<wd>mon|tues|wednes|thurs|fri|satur|sun)days? :: wd
(?P<wd>[月火水木金土日])曜(?:日)? :: wd
"""  # noqa: E501

# name :: one side :: the opposite side. Each side lists English regexes that must start a word,
# and Japanese strings, separated by ", ".
_OPPOSITES = r"""
upgrade/downgrade :: upgrad, アップグレード :: downgrad, ダウングレード
enable/disable :: enabl, (?:turn|switch)\w*\s+on\b, activat, 有効, オン :: disabl, (?:turn|switch)\w*\s+off\b, deactivat, 無効, オフ
more/less :: (?:higher|bigger|larger|greater|over|above)\b, more\s+than\b, at\s+least\b, 以上, 超え, より多 :: (?:lower|smaller|under|below)\b, (?:less|fewer)\s+than\b, at\s+most\b, 以下, 未満, より少
increase/decrease :: increas, rais, 増や, 増加, 増額, 引き上げ, 上げ, 大き :: decreas, reduc, 減ら, 減少, 減額, 引き下げ, 下げ, 小さ
add/remove :: add(?:s|ed|ing)?\b, 追加 :: remov, delet, 削除, 取り除
import/export :: import, インポート :: export, エクスポート
upload/download :: upload, アップロード :: download, ダウンロード
buy/sell :: buy, bought\b, purchas, 購入 :: sell, sold\b, 売却
deposit/withdraw :: deposit, 入金, 預け入れ :: withdr[ae]w, 出金, 引き出
include/exclude :: includ :: exclud
lock/unlock :: lock(?:s|ed|ing)?\b :: unlock
subscribe/unsubscribe :: subscrib(?:e|es|ed|ing)\b :: unsubscrib
install/uninstall :: install :: uninstall
before/after :: before\b, 前に, 以前 :: after\b, 後に, 以降, あとで, 後で
earlier/later :: earl(?:y|ier)\b, 早く, 早め, 早い :: later?\b, 遅く, 遅め, 遅い
accept/reject :: accept, approv, 承認 :: reject, declin, refus, denied\b, deny, 却下
credit/debit :: credit\b :: debit\b
open/close :: open :: clos
log in/log out :: log(?:ged)?\s*in\b, sign(?:ed)?\s*in\b, ログイン :: log(?:ged)?\s*out\b, sign(?:ed)?\s*out\b, ログアウト
start/stop :: start, begin, resum, 開始, 再開 :: stop, paus, 停止, 終了
cheap/expensive :: cheap, inexpensive, 安い, 安く :: expensive\b, pric(?:ey|ier)\b, 高い, 高く
fast/slow :: fast, quick :: slow
positive/negative :: positive\b, ポジティブ, 肯定 :: negative\b, ネガティブ, 否定
maximum/minimum :: max(?:imum)?\b, 最大, 上限 :: min(?:imum)?\b, 最小, 下限
"""  # noqa: E501

# "one", "first" and "second" are left out: "which one", "first time", "30 seconds".
_NUMBER_WORDS = """
zero 0 two 2 three 3 four 4 five 5 six 6 seven 7 eight 8 nine 9 ten 10 eleven 11 twelve 12
thirteen 13 fourteen 14 fifteen 15 sixteen 16 seventeen 17 eighteen 18 nineteen 19 twenty 20
thirty 30 forty 40 fifty 50 sixty 60 seventy 70 eighty 80 ninety 90 third 3 fourth 4 fifth 5
sixth 6 seventh 7 eighth 8 ninth 9 tenth 10 eleventh 11 twelfth 12
"""
_JA_COUNTERS = (
    "個|つ|人|名|日|月|年|時間|時|分|秒|週間|週|ヶ月|か月|カ月|ヵ月|回|件|円|本|枚|台|冊|泊|歳|"
    "才|階|点|段|倍|割|杯|着|部屋|ドル|箱|袋|口|社|店|席|晩|食|位|番目|度目"
)
# Words in which a numeral kanji is no number: 一緒 "together", 十分 "enough", 一時停止 "pause".
_JA_NUMERAL_NEUTRAL = re.compile(
    r"一緒|一番|一度|一部|一般|一覧|一括|一旦|一応|一時停止|一時的|一時保存|一文|統一|唯一|万一|"
    r"十分(?!間)|一切|一定|一方|一致|一律|同一|単一|一日中|一人暮らし|一連|一昨日"
)
_EN_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nothing|nobody|nowhere|neither|nor|without|cannot|unable|avoid\w*|"
    r"fail|fails|failed|failure|cant|dont|doesnt|didnt|wont|isnt|arent|wasnt|werent|havent|"
    r"hasnt|hadnt|shouldnt|wouldnt|couldnt)\b|n't\b"
)
# Hedges and idioms that do not negate the request itself.
_EN_NEGATION_NEUTRAL = re.compile(
    r"\bnot\s+(?:sure|certain|only)\b|\bno\s+(?:idea|problem|worries|later|earlier|more|less|"
    r"fewer)\b|\b(?:do|does|did)(?:n't|\s+not)\s+(?:know|understand|remember|recall)\b|"
    r"\b(?:can't|cannot|can\s+not)\s+(?:remember|recall)\b|\bno\.\s*\d|\bwhether\s+or\s+not\b|"
    r"\bif\s+not\b"
)
_JA_NEGATION = re.compile(
    r"な(?:い|く(?![しす])|かっ|けれ|きゃ)|ません|(?<=[ぁ-ゖ])ず(?:に|、|。|\s|$)|無い|無く|無し|なし|"
    r"不要|不可|不能|不在|不足|不十分|不適|未対応|非対応|非表示|非公開|未着|未到着|未払|未納|未完了|"
    r"未使用|未開封|無効|無料|無理"
)
# すみません "excuse me", いただけませんか "could you", わからない "I don't know how", 少ない "few".
_JA_NEGATION_NEUTRAL = re.compile(
    r"(?<![ぁ-ゖ])まず|必ず|ずつ|ずっと|すみません|すいません|申し訳(?:ございません|ありません|ない)|"
    r"(?:構|かま)いません|(?:いただけ|頂け|もらえ|貰え|くれ)(?:ない|ません)(?:でしょう)?か|"
    r"(?:わから|分から|判ら)(?:ない|なく)|(?:わかり|分かり)ません|少な|危な|間もなく|ほどなく|"
    r"もてなし|なくし|なくす|つな[いがぎぐげ]|おこな"
)
# A request to do something again: "issue a receipt" and "issue it again" are different requests.
_REPETITION = re.compile(
    r"\bagain\b|\bonce\s+more\b|\bre-?(?:issu|send|sent|order|deliver|print)|もう一度|もう1度|"
    r"再度|改めて|再発行|再送|再配達|再注文|再印刷|再購入"
)
_STOPWORDS = frozenset(
    "a an the my your our their his her its this that these those please some any".split()
)
# Words that frame a request without being its subject: a pair that differs only in these
# ("How do I" / "How can I", "change" / "update") may still be a paraphrase.
_FRAME_WORDS = _STOPWORDS | frozenset(
    "do does did can could would will should shall might must is are was were be been am i me we "
    "us you it they them how what where when why which who there here to of in on for with at by "
    "from and or if so just also still get change update edit modify set make find see check know "
    "tell show give want need like help kindly possible way able let ok i'd i'm i'll really "
    "actually exactly currently now ever even".split()
)

_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'「」『』、。]+", re.I)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_CODE = re.compile(r"(?<![A-Za-z0-9_-])(?:[A-Za-z][A-Za-z0-9_-]*\d[A-Za-z0-9_-]*|#\d+)")
_NUMBER = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(万|億)?")
_KANJI_NUMERAL = re.compile(
    rf"(?<!\d)[〇零一二三四五六七八九十百千][〇零一二三四五六七八九十百千万]*(?={_JA_COUNTERS})"
)
_QUOTED = re.compile(r"\"([^\"]{2,})\"|“([^”]{2,})”|「([^」]{2,})」|『([^』]{2,})』")
_CAPITALISED = re.compile(r"(?:[A-Z][A-Za-z'-]*|[a-z]+[A-Z][A-Za-z'-]*)(?:[ \t]+[A-Z][A-Za-z'-]*)*")
_KATAKANA_RUN = re.compile(rf"[{_KATA}]{{2,}}")
_EN_TOKEN = re.compile(r"[a-z0-9$%]+(?:[.,'][a-z0-9]+)*")
# A Japanese term with the particle after it: scrambled word order keeps the particles.
_JA_TOKEN = re.compile(rf"(?:[{_KANJI}]+|[{_KATA}]+|[A-Za-z]+|\d+(?:[.,]\d+)*)[ぁ-ゖ]?")
_JA_TEXT = re.compile(rf"[ぁ-ゖ{_KANJI}{_KATA}]")
_JA_CONTENT = re.compile(rf"[{_KANJI}{_KATA}A-Za-z]")
_DET = r"(?:(?:the|my|a|an|your|our)\s+)?"
_EN_FROM_TO = re.compile(
    rf"\bfrom\s+{_DET}([\w$.-]+)(?:\s+[\w-]+){{0,2}}?\s+(?:to|into)\s+{_DET}([\w$.-]+)"
)
_EN_X_TO_Y = re.compile(rf"([\w$.-]+)\s+(?:to|into|->|→)\s+{_DET}([\w$.-]+)")
_EN_INSTEAD = re.compile(r"([\w$.-]+)\s+instead\s+of\s+([\w$.-]+)")
_JA_RUN = rf"[{_KANJI}{_KATA}A-Za-z]+"
_JA_DIRECTION = re.compile(
    rf"({_JA_RUN})(?:から|を)[^{_KANJI}{_KATA}]{{0,2}}?({_JA_RUN})(?:に|へ|まで)"
)
_SENTENCE_BREAK = frozenset('.!?:;"“「『(\n')
_PRONOUN_I = re.compile(r"^I(?:'m|'d|'ll|'ve)?$")


def _date_key(m: re.Match[str], kind: str) -> str:
    """A canonical key: 2024-03-05, "March 5, 2024" and 2024年3月5日 all give 2024-3-5."""
    groups = {k: v for k, v in m.groupdict().items() if v}
    if kind == "wd":
        return "wd:" + _WEEKDAYS.get(groups["wd"], groups["wd"].lower()[:3])
    if kind == "rel":
        unit = {"週末": "weekend", "週": "week", "月": "month"}.get(
            groups["unit"], groups["unit"].lower()
        )
        return unit + _OFFSET[groups["off"].lower()]
    if kind != "ymd":
        return kind
    month = groups.get("m") or (groups.get("mon") and _MONTH_INDEX[groups["mon"][:3].lower()])
    year = groups.get("y")
    year = str(int(year) + 2000) if year and len(year) == 2 else year
    parts = [str(int(p)) for p in (year, month, groups.get("d")) if p]
    return ("y" if not month else "") + "-".join(parts)


_MONTH_INDEX = {name[:3]: str(i) for i, name in enumerate(_MONTHS.split(), 1)}
_DATES = [
    (re.compile(pattern.replace("MONTH", _MONTH), re.I), kind)
    for pattern, kind in (line.rsplit(" :: ", 1) for line in _DATE_TABLE.strip().splitlines())
]

_NUMBER_VALUES = dict(zip(*[iter(_NUMBER_WORDS.split())] * 2, strict=True))
_TENS = "|".join(w for w, n in _NUMBER_VALUES.items() if int(n) >= 20)
_EN_NUMBER_WORD = re.compile(
    rf"\b(?:({_TENS})-)?({'|'.join(sorted(_NUMBER_VALUES, key=len, reverse=True))})\b"
)

_SIDES = [
    (f"{name}:{side}", terms.split(", "))
    for name, a, b in (line.split(" :: ") for line in _OPPOSITES.strip().splitlines())
    for side, terms in (("a", a), ("b", b))
]
# One regex, tried only where a word starts, finds the English side of every pair in one pass.
_EN_OPPOSITE = re.compile(
    r"\b(?:"
    + "|".join(
        f"(?P<o{i}>{'|'.join(t for t in terms if t.isascii())})"
        for i, (_, terms) in enumerate(_SIDES)
    )
    + ")"
)
_JA_OPPOSITES = [(side, t) for side, terms in _SIDES for t in terms if not t.isascii()]


@dataclass(frozen=True)
class PromptFacts:
    """The concrete facts of one prompt that a semantic hit must not change."""

    text: str
    ids: frozenset[str]
    dates: frozenset[str]
    numbers: frozenset[str]
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
    if q.negated != c.negated:
        return f"negation only in the {'query' if q.negated else 'cached prompt'}"
    if q.repeated != c.repeated:
        return f"repetition only in the {'query' if q.repeated else 'cached prompt'}"
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
    rest = _KANJI_NUMERAL.sub(lambda m: f" {_kanji_to_int(m[0])}", _mask(norm, _JA_NUMERAL_NEUTRAL))
    ids: set[str] = set()
    for pattern in (_URL, _EMAIL, _CODE):
        ids |= {m[0].rstrip(".,;:!?)").strip("-_").lower() for m in pattern.finditer(rest)}
        rest = pattern.sub(" ", rest)
    dates: set[str] = set()
    for pattern, kind in _DATES:
        found = {_date_key(m, kind) for m in pattern.finditer(rest)}
        if found:
            dates |= found
            rest = pattern.sub(" ", rest)
    if {"wd:sat", "wd:sun"} <= dates:  # "weekends" == "Saturdays and Sundays"
        dates = (dates - {"wd:sat", "wd:sun"}) | {"weekend"}
    # The text without its ids and dates, numbers in one spelling: "3 days" == "three days".
    skeleton = _NUMBER.sub(
        lambda m: f" {_number_key(m)} ", _EN_NUMBER_WORD.sub(_number_word, rest.lower())
    )
    numbers = {_number_key(m) for m in _NUMBER.finditer(skeleton)}
    quoted = {next(g for g in m.groups() if g).strip().lower() for m in _QUOTED.finditer(norm)}
    return PromptFacts(
        text=lower,
        ids=frozenset(ids),
        dates=frozenset(dates),
        numbers=frozenset(numbers),
        negated=bool(
            _EN_NEGATION.search(_EN_NEGATION_NEUTRAL.sub(" ", lower))
            or _JA_NEGATION.search(_mask(lower, _JA_NEGATION_NEUTRAL))
        ),
        repeated=bool(_REPETITION.search(lower)),
        opposites=frozenset(
            {_SIDES[int(str(m.lastgroup)[1:])][0] for m in _EN_OPPOSITE.finditer(lower)}
            | {side for side, term in _JA_OPPOSITES if term in lower}
        ),
        directions=frozenset(_directions(lower)),
        content=tuple(t for t in _EN_TOKEN.findall(lower) if t not in _STOPWORDS),
        names=frozenset(_names(rest) | quoted),
        katakana=frozenset(_KATAKANA_RUN.findall(norm)),
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
    return f" {int(_NUMBER_VALUES[m[2]]) + (int(_NUMBER_VALUES[m[1]]) if m[1] else 0)} "


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
        for pattern in (_EN_FROM_TO, _EN_X_TO_Y, _JA_DIRECTION)
        for m in pattern.finditer(lower)
    }
    pairs |= {(m[2], m[1]) for m in _EN_INSTEAD.finditer(lower)}  # "A instead of B" = B -> A
    return {(a.strip(".$"), b.strip(".$")) for a, b in pairs if a.strip(".$") != b.strip(".$")}


def _reversed(q: PromptFacts, c: PromptFacts) -> bool:
    if any((b, a) in c.directions for a, b in q.directions):
        return True
    # The same content words in another order: "points for a gift card" / "a gift card for points".
    if len(q.content) >= 2 and q.content != c.content and sorted(q.content) == sorted(c.content):
        return True
    q_ja, c_ja = _JA_TOKEN.findall(q.text), _JA_TOKEN.findall(c.text)
    if q_ja == c_ja or sorted(q_ja) != sorted(c_ja):
        return False
    return sum(1 for a, b in zip(q_ja, c_ja, strict=True) if a != b) == 2  # two terms traded places


def _changed_slot(q_text: str, c_text: str) -> tuple[str, str] | None:
    """The differing spans when both prompts share one frame and only a content slot differs.

    "Is the blue version in stock?" / "Is the red version in stock?", 注文/予約をキャンセル,
    営業時間 / 京都店の営業時間: the shared frame dominates the embedding, so the similarity says
    nothing about whether the changed or added words matter, and they usually do.
    """
    japanese = bool(_JA_TEXT.search(q_text) or _JA_TEXT.search(c_text))
    if japanese:
        q_seq, c_seq = list("".join(q_text.split())), list("".join(c_text.split()))
    else:
        q_seq, c_seq = _EN_TOKEN.findall(q_text), _EN_TOKEN.findall(c_text)
    n = min(len(q_seq), len(c_seq))
    prefix = next((i for i in range(n) if q_seq[i] != c_seq[i]), n)
    suffix = next((i for i in range(n - prefix) if q_seq[-1 - i] != c_seq[-1 - i]), n - prefix)
    q_span, c_span = q_seq[prefix : len(q_seq) - suffix], c_seq[prefix : len(c_seq) - suffix]
    longest = max(len(q_seq), len(c_seq))
    if max(len(q_span), len(c_span)) > (8 if japanese else 3) or prefix + suffix < 0.6 * longest:
        return None
    if japanese:
        content = [any(_JA_CONTENT.match(ch) for ch in span) for span in (q_span, c_span)]
    else:
        content = [any(t not in _FRAME_WORDS for t in span) for span in (q_span, c_span)]
    # A changed slot needs content on both sides; an added qualifier needs content on its side.
    if (q_span and c_span and all(content)) or (not (q_span and c_span) and any(content)):
        joiner = "" if japanese else " "
        return joiner.join(q_span) or "(nothing)", joiner.join(c_span) or "(nothing)"
    return None


def _names(text: str) -> set[str]:
    """Capitalised names, acronyms and camelCase product names; sentence-initial words skipped."""
    names: set[str] = set()
    japanese = bool(_JA_TEXT.search(text))  # Japanese has no sentence-initial capitals
    for m in _CAPITALISED.finditer(text):
        words = m[0].split()
        before = text[: m.start()].rstrip()
        sentence_start = not japanese and (not before or before[-1] in _SENTENCE_BREAK)
        if sentence_start and not _is_marked(words[0]):
            words = words[1:]
        words = [w for w in words if not _PRONOUN_I.match(w)]
        if words:
            names.add(re.sub(r"'s$", "", " ".join(words)).lower())
    return {n for n in names if len(n) > 1}


def _is_marked(word: str) -> bool:
    """An acronym (API, SSD) or an inner capital (iPhone, PayPal): a name even at a start."""
    letters = [ch for ch in word if ch.isalpha()]
    return len(letters) >= 2 and any(ch.isupper() for ch in letters[1:])


def _unmatched(terms: frozenset[str], other_text: str) -> set[str]:
    return {t for t in terms if t.lower() not in other_text}
