"""The word lists and patterns behind `semantic_guard`: ids, dates, numbers, negation,
repetition, opposites and direction, in English and Japanese.

Tables are data: a line of `DATE_TABLE` or `OPPOSITES` is a pattern or a pair of term lists, so a
new holiday, counter or opposite pair is one line here and no code.
"""

from __future__ import annotations

import re

KANJI = "\u3400-\u4dbf\u4e00-\u9fff々〆ヵヶ"
KATA = "\u30a1-\u30fa\u30fc"
MONTHS = "january february march april may june july august september october november december"
MONTH = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
OFFSET = {"this": "+0", "next": "+1", "coming": "+1", "last": "-1", "previous": "-1"}
OFFSET |= {"past": "-1", "今": "+0", "来": "+1", "先": "-1"}
WEEKDAYS = dict(zip("月火水木金土日", "mon tue wed thu fri sat sun".split(), strict=True))

# pattern :: key. "ymd" builds the key from the groups y, m (or month name mon) and d; "rel"
# from off(set) and unit; "wd" from the weekday; anything else is the key itself.
DATE_TABLE = r"""
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
OPPOSITES = r"""
upgrade/downgrade :: upgrad, アップグレード :: downgrad, ダウングレード
enable/disable :: enabl, (?:turn|switch)\w*\s+on\b, activat, 有効, オン :: disabl, (?:turn|switch)\w*\s+off\b, deactivat, 無効, オフ
more/less :: (?:higher|bigger|larger|greater|over|above)\b, more\s+than\b, at\s+least\b, 以上, 超え, より多 :: (?:lower|smaller|under|below)\b, (?:less|fewer)\s+than\b, at\s+most\b, 以下, 未満, より少
increase/decrease :: increas, rais, 増や, 増加, 増額, 引き上げ, 上げ, 大き :: decreas, reduc, 減ら, 減少, 減額, 引き下げ, 下げ, 小さ
add/remove :: add(?:s|ed|ing)?\b, appl(?:y|ies|ied|ying)\b, put(?:s|ting)?\b, mak(?:e|es|ing)\b, insert, attach, 追加, 適用, 付け, 入れ :: remov, delet, get(?:ting)?\s+rid\b, tak(?:e|es|ing)\s+(?:\S+\s+){0,3}?off\b, strip, 削除, 取り除, 外す, 外し, 解除, 消す, 消し
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

# relation :: patterns (regexes over the lower-cased text, numbers already in digits). Two
# prompts must state the same relations: "within 30 days" is not "after 30 days". Each line is
# one meaning, so "over $50" == "more than $50"; an ambiguous word ("over the phone", "under my
# account") counts only before a number. Earlier lines win where patterns overlap ("no more than").
RELATION_TABLE = r"""
at most :: at\s+most\b, no\s+more\s+than\b, not\s+more\s+than\b, maximum\s+of\b, or\s+(?:less|fewer)\b, up\s+to\s+(?=[$€£¥]?\s*\d), (?<=[^\s「『(（。、！？:：])以下
at least :: at\s+least\b, no\s+less\s+than\b, minimum\s+of\b, or\s+more\b, (?<=[^\s「『(（。、！？:：])以上
within :: within\b, 以内
after :: after\b, later\s+than\b, 以降, (?<=[日月年週間])後
before :: before\b, prior\s+to\b, earlier\s+than\b, 以前, より前, (?<=[日月年週間])前
until :: until\b, till\b
since :: since\b, 以来
over :: over\s+(?=[$€£¥]?\s*\d), more\s+than\b, above\s+(?=[$€£¥]?\s*\d), greater\s+than\b, exceeding\b, 超
under :: under\s+(?=[$€£¥]?\s*\d), less\s+than\b, fewer\s+than\b, below\s+(?=[$€£¥]?\s*\d), 未満
"""  # noqa: E501

# action :: patterns. When both prompts name actions, they must name the same ones: "change my
# order" is not "cancel my order", though the rest of the sentence may be worded differently.
# Synonyms share a line; a prompt without any of these words is not compared by this rule.
ACTION_TABLE = r"""
cancel :: cancel\w*, call\w*\s+off\b, キャンセル, 取り消, 取消, 解約
change :: chang\w*, modif\w*, edit\w*, updat\w*, amend\w*, alter\w*, 変更, 修正
track :: track\w*, trac(?:e|ed|ing)\b, 追跡
pause :: paus\w*, suspend\w*, on\s+hold\b, 一時停止, 休止
renew :: renew\w*, extend\w*, 更新, 延長
return :: return\w*, send\w*\s+(?:\S+\s+){0,2}?back\b, 返品, 返送
refund :: refund\w*, money\s+back\b, 返金, お金\S{0,2}戻
exchange :: exchang\w*, swap\w*, 交換
reset :: reset\w*, リセット
delete :: delet\w*, 削除
"""

# "one", "first" and "second" are left out: "which one", "first time", "30 seconds".
NUMBER_WORDS = """
zero 0 two 2 three 3 four 4 five 5 six 6 seven 7 eight 8 nine 9 ten 10 eleven 11 twelve 12
thirteen 13 fourteen 14 fifteen 15 sixteen 16 seventeen 17 eighteen 18 nineteen 19 twenty 20
thirty 30 forty 40 fifty 50 sixty 60 seventy 70 eighty 80 ninety 90 third 3 fourth 4 fifth 5
sixth 6 seventh 7 eighth 8 ninth 9 tenth 10 eleventh 11 twelfth 12
"""
JA_COUNTERS = (
    "個|つ|人|名|日|月|年|時間|時|分|秒|週間|週|ヶ月|か月|カ月|ヵ月|回|件|円|本|枚|台|冊|泊|歳|"
    "才|階|点|段|倍|割|杯|着|部屋|ドル|箱|袋|口|社|店|席|晩|食|位|番目|度目"
)
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
# Hedges and idioms that do not negate the request itself.
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
# すみません "excuse me", いただけませんか "could you", わからない "I don't know how", 少ない "few".
JA_NEGATION_NEUTRAL = re.compile(
    r"(?<![ぁ-ゖ])まず|必ず|ずつ|ずっと|すみません|すいません|申し訳(?:ございません|ありません|ない)|"
    r"(?:構|かま)いません|(?:いただけ|頂け|もらえ|貰え|くれ)(?:ない|ません)(?:でしょう)?か|"
    r"(?:わから|分から|判ら)(?:ない|なく)|(?:わかり|分かり)ません|少な|危な|間もなく|ほどなく|"
    r"もてなし|なくし|なくす|つな[いがぎぐげ]|おこな"
)
# A request to do something again: "issue a receipt" and "issue it again" are different requests.
REPETITION = re.compile(
    r"\bagain\b|\bonce\s+more\b|\bre-?(?:issu|send|sent|order|deliver|print)|もう一度|もう1度|"
    r"再度|改めて|再発行|再送|再配達|再注文|再印刷|再購入"
)
STOPWORDS = frozenset(
    "a an the my your our their his her its this that these those please some any".split()
)
# Words that frame a request without being its subject: a pair that differs only in these
# ("How do I" / "How can I", "change" / "update") may still be a paraphrase.
FRAME_WORDS = STOPWORDS | frozenset(
    "do does did can could would will should shall might must is are was were be been am i me we "
    "us you it they them how what where when why which who there here to of in on for with at by "
    "from and or if so just also still get change update edit modify set make find see check know "
    "tell show give want need like help kindly possible way able let ok i'd i'm i'll really "
    "actually exactly currently now ever even".split()
)

URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'「」『』、。]+", re.I)
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
CODE = re.compile(r"(?<![A-Za-z0-9_-])(?:[A-Za-z][A-Za-z0-9_-]*\d[A-Za-z0-9_-]*|#\d+)")
NUMBER = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(万|億)?")
KANJI_NUMERAL = re.compile(
    rf"(?<!\d)[〇零一二三四五六七八九十百千][〇零一二三四五六七八九十百千万]*(?={JA_COUNTERS})"
)
QUOTED = re.compile(r"\"([^\"]{2,})\"|“([^”]{2,})”|「([^」]{2,})」|『([^』]{2,})』")
CAPITALISED = re.compile(r"(?:[A-Z][A-Za-z'-]*|[a-z]+[A-Z][A-Za-z'-]*)(?:[ \t]+[A-Z][A-Za-z'-]*)*")
# A kanji place name before 店/駅/市...: 梅田店 and 天神店 are different shops.
JA_PLACE = re.compile(rf"(?<![当本各同全支閉開来入出])([{KANJI}]{{1,4}}?)(?=店|駅|県|市|区|支店)")
KATAKANA_RUN = re.compile(rf"[{KATA}]{{2,}}")
EN_TOKEN = re.compile(r"[a-z0-9$%]+(?:[.,'][a-z0-9]+)*")
# A Japanese term with the particle after it: scrambled word order keeps the particles.
JA_TOKEN = re.compile(rf"(?:[{KANJI}]+|[{KATA}]+|[A-Za-z]+|\d+(?:[.,]\d+)*)[ぁ-ゖ]?")
JA_TEXT = re.compile(rf"[ぁ-ゖ{KANJI}{KATA}]")
JA_CONTENT = re.compile(rf"[{KANJI}{KATA}A-Za-z]")
DET = r"(?:(?:the|my|a|an|your|our)\s+)?"
EN_FROM_TO = re.compile(
    rf"\bfrom\s+{DET}([\w$.-]+)(?:\s+[\w-]+){{0,2}}?\s+(?:to|into)\s+{DET}([\w$.-]+)"
)
EN_X_TO_Y = re.compile(rf"([\w$.-]+)\s+(?:to|into|->|→)\s+{DET}([\w$.-]+)")
EN_INSTEAD = re.compile(r"([\w$.-]+)\s+instead\s+of\s+([\w$.-]+)")
JA_RUN = rf"[{KANJI}{KATA}A-Za-z]+"
JA_DIRECTION = re.compile(rf"({JA_RUN})(?:から|を)[^{KANJI}{KATA}]{{0,2}}?({JA_RUN})(?:に|へ|まで)")
SENTENCE_BREAK = frozenset('.!?:;"“「『(\n')
PRONOUN_I = re.compile(r"^I(?:'m|'d|'ll|'ve)?$")


def date_key(m: re.Match[str], kind: str) -> str:
    """A canonical key: 2024-03-05, "March 5, 2024" and 2024年3月5日 all give 2024-3-5."""
    groups = {k: v for k, v in m.groupdict().items() if v}
    if kind == "wd":
        return "wd:" + WEEKDAYS.get(groups["wd"], groups["wd"].lower()[:3])
    if kind == "rel":
        unit = {"週末": "weekend", "週": "week", "月": "month"}.get(
            groups["unit"], groups["unit"].lower()
        )
        return unit + OFFSET[groups["off"].lower()]
    if kind != "ymd":
        return kind
    month = groups.get("m") or (groups.get("mon") and MONTH_INDEX[groups["mon"][:3].lower()])
    year = groups.get("y")
    year = str(int(year) + 2000) if year and len(year) == 2 else year
    parts = [str(int(p)) for p in (year, month, groups.get("d")) if p]
    return ("y" if not month else "") + "-".join(parts)


MONTH_INDEX = {name[:3]: str(i) for i, name in enumerate(MONTHS.split(), 1)}
DATES = [
    (re.compile(pattern.replace("MONTH", MONTH), re.I), kind)
    for pattern, kind in (line.rsplit(" :: ", 1) for line in DATE_TABLE.strip().splitlines())
]

NUMBER_VALUES = dict(zip(*[iter(NUMBER_WORDS.split())] * 2, strict=True))
TENS = "|".join(w for w, n in NUMBER_VALUES.items() if int(n) >= 20)
EN_NUMBER_WORD = re.compile(
    rf"\b(?:({TENS})[-\s])?({'|'.join(sorted(NUMBER_VALUES, key=len, reverse=True))})\b"
)
# "a dozen" == 12, "half a dozen" == 6, "2 dozen" == 24 (number words are digits by then)
DOZEN = re.compile(r"\b(?:(half\s+a)|a|(\d+))\s+dozens?\b")

SIDES = [
    (f"{name}:{side}", terms.split(", "))
    for name, a, b in (line.split(" :: ") for line in OPPOSITES.strip().splitlines())
    for side, terms in (("a", a), ("b", b))
]
# One regex, tried only where a word starts, finds the English side of every pair in one pass.
EN_OPPOSITE = re.compile(
    r"\b(?:"
    + "|".join(
        f"(?P<o{i}>{'|'.join(t for t in terms if t.isascii())})"
        for i, (_, terms) in enumerate(SIDES)
    )
    + ")"
)
JA_OPPOSITES = [(side, t) for side, terms in SIDES for t in terms if not t.isascii()]

RELATION_NAMES = [line.split(" :: ")[0] for line in RELATION_TABLE.strip().splitlines()]
# One regex: an English pattern must start a word, a Japanese one may start anywhere.
RELATION = re.compile(
    "|".join(
        f"(?P<r{i}>"
        + "|".join((rf"\b{t}" if "a" <= t[0] <= "z" else t) for t in terms.split(", "))
        + ")"
        for i, terms in enumerate(
            line.split(" :: ")[1] for line in RELATION_TABLE.strip().splitlines()
        )
    )
)

ACTION_NAMES = [line.split(" :: ")[0] for line in ACTION_TABLE.strip().splitlines()]
ACTION = re.compile(
    "|".join(
        f"(?P<a{i}>"
        + "|".join((rf"\b{t}" if "a" <= t[0] <= "z" else t) for t in terms.split(", "))
        + ")"
        for i, terms in enumerate(
            line.split(" :: ")[1] for line in ACTION_TABLE.strip().splitlines()
        )
    )
)
