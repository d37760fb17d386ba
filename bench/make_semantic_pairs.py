"""Generate the templated half of the labelled semantic pairs (deterministic; seed fixed).

    python bench/make_semantic_pairs.py      # writes tests/data/semantic_pairs_generated.jsonl

Hand-written pairs live in tests/data/semantic_pairs.jsonl. These add the near-miss families a
support workload shows again and again, in English and Japanese, each with true paraphrases of
the same question beside it:

- relation: the same window or amount with another relation (within / after / before, over /
  under, at least / at most; 以内 / 以降 / 以前 / 以上 / 以下 / 未満 / 超);
- number: another value, in digits or words on either side (30 / thirty / 三十);
- action: make or apply vs remove (bold, a filter, a discount code; 適用 / 解除);
- negation, entity (country, product, city), date (weekday), reversal (A to B / B to A).

A paraphrase keeps every fact: the same relation, value, action, entity and direction, worded
differently (numbers may switch between digits and words). Each line says its family in `kind`.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "semantic_pairs_generated.jsonl"

EN_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
KANJI_DIGITS = "〇一二三四五六七八九"

Pair = dict[str, str]


def en_number(n: int, rng: random.Random) -> str:
    """`n` in digits or in words (both spellings must mean the same to the guard)."""
    if rng.random() < 0.5 or n >= 100:
        return str(n)
    if n < 20:
        return EN_WORDS[n]
    tens, ones = divmod(n, 10)
    return EN_TENS[tens] + (f"-{EN_WORDS[ones]}" if ones else "")


def en_amount(n: int, rng: random.Random) -> str:
    """A dollar amount: "$50" or "fifty dollars"."""
    words = en_number(n, rng)
    return f"${n}" if words == str(n) else f"{words} dollars"


def ja_number(n: int, rng: random.Random) -> str:
    """`n` in digits or kanji numerals (used before a counter: 日, 円, 個 ...)."""
    if rng.random() < 0.5 or n >= 100:
        return str(n)
    tens, ones = divmod(n, 10)
    head = "" if tens == 0 else ("十" if tens == 1 else KANJI_DIGITS[tens] + "十")
    return head + (KANJI_DIGITS[ones] if ones else "")


# ---- relation and number families: a topic, phrasings with {rel} and {n} slots --------------

EN_WINDOW_RELATIONS = {"within": "within {n} days", "after": "after {n} days"}
EN_WINDOW_TOPICS = [
    [
        "Can I get a refund {rel}?",
        "Is a refund possible {rel}?",
        "Will you refund me {rel}?",
        "Do I get my money back {rel}?",
    ],
    [
        "Can I return the item {rel}?",
        "Is it possible to return an item {rel}?",
        "Am I allowed to send the item back {rel}?",
    ],
    [
        "Can I cancel my subscription {rel}?",
        "Is cancelling the subscription possible {rel}?",
        "Am I able to cancel my subscription {rel}?",
    ],
    [
        "Can I exchange a product {rel}?",
        "Is an exchange possible {rel}?",
        "Could I swap the product for another one {rel}?",
    ],
    [
        "Can I change my delivery address {rel}?",
        "Is it possible to update the delivery address {rel}?",
        "Am I able to edit the shipping address {rel}?",
    ],
    [
        "Can I claim the warranty {rel}?",
        "Is a warranty claim accepted {rel}?",
        "Will you accept a warranty claim {rel}?",
    ],
]
EN_AMOUNT_RELATIONS = {
    "over": ["over {n}", "more than {n}", "above {n}"],
    "under": ["under {n}", "less than {n}", "below {n}"],
    "at least": ["of at least {n}"],
    "at most": ["of at most {n}"],
}
EN_AMOUNT_TOPICS = [
    [
        "Is shipping free on orders {rel}?",
        "Do orders {rel} ship for free?",
        "Do you offer free shipping for orders {rel}?",
    ],
    [
        "Do I need a signature for deliveries {rel}?",
        "Is a signature required for deliveries {rel}?",
        "Will deliveries {rel} need a signature?",
    ],
    [
        "Can I pay in instalments for purchases {rel}?",
        "Are instalment payments available for purchases {rel}?",
        "Is paying in instalments possible for purchases {rel}?",
    ],
]
JA_WINDOW_RELATIONS = {"以内": "{n}日以内", "以降": "{n}日以降"}
JA_WINDOW_TOPICS = [
    [
        "{rel}に返金してもらえますか？",
        "返金は{rel}でも可能ですか？",
        "{rel}であれば返金できますか？",
    ],
    [
        "{rel}に返品できますか？",
        "{rel}でも商品を返品できますか？",
        "返品は{rel}に受け付けていますか？",
    ],
    ["{rel}に解約できますか？", "{rel}でもサブスクを解約できますか？", "解約は{rel}に可能ですか？"],
    [
        "{rel}に交換してもらえますか？",
        "商品の交換は{rel}でもできますか？",
        "{rel}なら交換できますか？",
    ],
    [
        "{rel}に配送先を変更できますか？",
        "配送先の変更は{rel}でも可能ですか？",
        "{rel}でもお届け先を変えられますか？",
    ],
]
JA_AMOUNT_RELATIONS = {
    "以上": "{n}円以上",
    "以下": "{n}円以下",
    "未満": "{n}円未満",
    "超": "{n}円超",
}
JA_AMOUNT_TOPICS = [
    [
        "{rel}の注文は送料無料ですか？",
        "{rel}の注文なら送料はかかりませんか？",
        "送料無料になるのは{rel}の注文ですか？",
    ],
    [
        "{rel}の購入は分割払いにできますか？",
        "{rel}の買い物で分割払いは使えますか？",
        "分割払いは{rel}の購入で利用できますか？",
    ],
    [
        "{rel}の配達にはサインが必要ですか？",
        "{rel}の荷物は受け取りにサインが要りますか？",
        "サインが必要なのは{rel}の配達ですか？",
    ],
]


CLOSE = [{"over", "at least"}, {"under", "at most"}, {"以上", "超"}, {"以下", "未満"}]


def relation_family(
    lang: str,
    topics: list[list[str]],
    relations: dict[str, str | list[str]],
    values: list[int],
    rng: random.Random,
    number: Callable[[int, random.Random], str],
) -> Iterator[Pair]:
    """Paraphrases (same relation and value), relation near-misses, number near-misses."""

    def render(template: str, rel: str, n: int) -> str:
        forms = relations[rel]
        form = rng.choice(forms) if isinstance(forms, list) else forms
        return template.format(rel=form.format(n=number(n, rng)))

    for phrasings in topics:
        for rel in relations:
            for n in rng.sample(values, 3):
                a, b = rng.sample(phrasings, 2)
                yield pair(render(a, rel, n), render(b, rel, n), "paraphrase", "paraphrase", lang)
        for rel, other in itertools.permutations(relations, 2):
            # "over" vs "at least" differ only at the boundary: no label either way
            if {rel, other} not in CLOSE and rng.random() < 0.8:
                n = rng.choice(values)
                a, b = rng.choice(phrasings), rng.choice(phrasings)
                yield pair(render(a, rel, n), render(b, other, n), "near_miss", "relation", lang)
        for _ in range(6):
            rel = rng.choice(list(relations))
            n, m = rng.sample(values, 2)
            a, b = rng.choice(phrasings), rng.choice(phrasings)
            yield pair(render(a, rel, n), render(b, rel, m), "near_miss", "number", lang)


# ---- make / apply vs remove ------------------------------------------------------------------

EN_OBJECTS = [
    ("bold", "the text"),
    ("italics", "the heading"),
    ("an underline", "the title"),
    ("a filter", "the photo"),
    ("a watermark", "the document"),
    ("a discount code", "my order"),
    ("a border", "the table"),
    ("a password", "the PDF"),
    ("a label", "the email"),
    ("a tag", "the contact"),
]
EN_ADD = [
    "How do I apply {o} to {t}?",
    "How can I add {o} to {t}?",
    "What's the way to put {o} on {t}?",
    "Is there a way to add {o} to {t}?",
]
EN_REMOVE = [
    "How do I remove {o} from {t}?",
    "How can I get rid of {o} on {t}?",
    "What's the way to take {o} off {t}?",
    "Is there a way to delete {o} from {t}?",
]
JA_OBJECTS = [
    ("太字", "文字"),
    ("斜体", "見出し"),
    ("下線", "タイトル"),
    ("フィルター", "写真"),
    ("透かし", "文書"),
    ("割引コード", "注文"),
    ("罫線", "表"),
    ("パスワード", "PDF"),
    ("ラベル", "メール"),
    ("タグ", "連絡先"),
]
JA_ADD = [
    "{t}に{o}を適用するにはどうすればいいですか？",
    "{t}に{o}を追加する方法を教えてください。",
    "{t}に{o}を付けるにはどうしたらいいですか？",
    "{t}に{o}を入れる手順を教えてください。",
]
JA_REMOVE = [
    "{t}の{o}を解除するにはどうすればいいですか？",
    "{t}から{o}を削除する方法を教えてください。",
    "{t}の{o}を外すにはどうしたらいいですか？",
    "{t}の{o}を消す手順を教えてください。",
]


def action_family(
    lang: str, objects: list[tuple[str, str]], add: list[str], remove: list[str]
) -> Iterator[Pair]:
    for o, t in objects:
        for side in (add, remove):
            for a, b in itertools.combinations(side, 2):
                yield pair(a.format(o=o, t=t), b.format(o=o, t=t), "paraphrase", "paraphrase", lang)
        for a, b in zip(add, remove, strict=True):
            yield pair(a.format(o=o, t=t), b.format(o=o, t=t), "near_miss", "action", lang)
        yield pair(add[0].format(o=o, t=t), remove[2].format(o=o, t=t), "near_miss", "action", lang)
        yield pair(add[3].format(o=o, t=t), remove[1].format(o=o, t=t), "near_miss", "action", lang)


# ---- another action on the same object: "change my order" is not "cancel my order" ---------

EN_VERBS = ["cancel", "change", "track", "pause", "renew", "return"]
EN_VERB_OBJECTS = ["order", "subscription", "booking", "reservation", "membership", "plan"]
EN_VERB_FRAMES = [
    "How do I {v} my {o}?",
    "How can I {v} my {o}?",
    "What's the way to {v} my {o}?",
    "Is there a way to {v} my {o}?",
]
JA_VERBS = ["キャンセル", "変更", "追跡", "一時停止", "更新", "返品"]
JA_VERB_OBJECTS = ["注文", "サブスク", "予約", "会員登録", "プラン", "定期便"]
JA_VERB_FRAMES = [
    "{o}を{v}するにはどうすればいいですか？",
    "{o}の{v}方法を教えてください。",
    "{o}を{v}したいのですが、どうすればいいですか？",
]
# pairs of actions that make sense on each object (returning a subscription does not)
EN_VERB_FIT = {
    "return": {"order"},
    "track": {"order"},
    "pause": {"subscription", "membership", "plan"},
}
JA_VERB_FIT = {
    "返品": {"注文"},
    "追跡": {"注文", "定期便"},
    "一時停止": {"サブスク", "定期便", "プラン"},
}


def verb_family(
    lang: str,
    verbs: list[str],
    objects: list[str],
    frames: list[str],
    fit: dict[str, set[str]],
    rng: random.Random,
) -> Iterator[Pair]:
    for o in objects:
        usable = [v for v in verbs if o in fit.get(v, {o})]
        for v in usable:
            a, b = rng.sample(frames, 2)
            yield pair(a.format(v=v, o=o), b.format(v=v, o=o), "paraphrase", "paraphrase", lang)
        for v, w in rng.sample(list(itertools.permutations(usable, 2)), min(8, len(usable) * 2)):
            a, b = rng.choice(frames), rng.choice(frames)
            yield pair(a.format(v=v, o=o), b.format(v=w, o=o), "near_miss", "action", lang)


# ---- entity, date, negation, reversal: a frame with one slot ---------------------------------

EN_SLOTS: list[tuple[str, list[str], list[str]]] = [
    (
        "entity",
        ["Do you ship to {x}?", "Can you deliver to {x}?", "Is shipping to {x} available?"],
        "Canada Mexico Japan Germany France Brazil Australia India Spain Italy".split(),
    ),
    (
        "entity",
        [
            "What are the opening hours of the {x} store?",
            "When is the {x} store open?",
            "What time does the {x} store open and close?",
        ],
        "Boston Denver Seattle Chicago Austin Portland Miami Dallas".split(),
    ),
    (
        "entity",
        [
            "Is the {x} waterproof?",
            "Is the {x} a waterproof model?",
            "Does the {x} have a waterproof design?",
        ],
        ["Aero 5", "Nova X", "Pixel Pro", "Orbit Mini", "Zen Max", "Flex Air"],
    ),
    (
        "date",
        ["Are you open on {x}?", "Is the shop open on {x}?", "Do you open your doors on {x}?"],
        "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    ),
    (
        "date",
        [
            "Can you deliver my order on {x}?",
            "Is delivery possible on {x}?",
            "Could my package arrive on {x}?",
        ],
        "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    ),
]
JA_SLOTS: list[tuple[str, list[str], list[str]]] = [
    (
        "entity",
        ["{x}に発送できますか？", "{x}への配送は可能ですか？", "{x}にも届けてもらえますか？"],
        "カナダ メキシコ ドイツ フランス ブラジル オーストラリア インド スペイン イタリア".split(),
    ),
    (
        "entity",
        [
            "{x}店の営業時間を教えてください。",
            "{x}店は何時から何時まで開いていますか？",
            "{x}店の営業時間は？",
        ],
        "渋谷 新宿 池袋 梅田 難波 天神 栄 札幌".split(),
    ),
    (
        "date",
        [
            "{x}曜日は営業していますか？",
            "{x}曜日もお店は開いていますか？",
            "{x}曜日に営業はありますか？",
        ],
        list("月火水木金土日"),
    ),
    (
        "date",
        [
            "{x}曜日に配達してもらえますか？",
            "{x}曜日の配達は可能ですか？",
            "{x}曜日に届けてもらえますか？",
        ],
        list("月火水木金土日"),
    ),
]


def slot_family(
    lang: str, kind: str, phrasings: list[str], values: list[str], rng: random.Random
) -> Iterator[Pair]:
    for x in values:
        for a, b in itertools.combinations(phrasings, 2):
            yield pair(a.format(x=x), b.format(x=x), "paraphrase", "paraphrase", lang)
    for x, y in rng.sample(list(itertools.permutations(values, 2)), 3 * len(values)):
        a, b = rng.choice(phrasings), rng.choice(phrasings)
        yield pair(a.format(x=x), b.format(x=y), "near_miss", kind, lang)


EN_NEGATION = [
    ("I received my {x}, what should I do next?", "I never received my {x}, what should I do?"),
    ("Why was my {x} charged twice?", "Why wasn't my {x} charged?"),
    ("Can my {x} be refunded?", "Why can't my {x} be refunded?"),
    ("My {x} arrived damaged.", "My {x} has not arrived."),
    ("Is my {x} covered by the warranty?", "Is my {x} not covered by the warranty?"),
]
EN_NEGATION_PARAPHRASES = [
    ("My {x} never arrived, what should I do?", "What should I do if my {x} didn't arrive?"),
    ("Why can't my {x} be refunded?", "Why is my {x} not refundable?"),
    ("Is my {x} covered by the warranty?", "Does the warranty cover my {x}?"),
]
EN_THINGS = "order parcel laptop headphones jacket tablet camera blender".split()
JA_NEGATION = [
    ("{x}が届きました。次はどうすればいいですか？", "{x}が届きません。どうすればいいですか？"),
    ("{x}は返金できますか？", "{x}はなぜ返金できないのですか？"),
    ("{x}は保証の対象ですか？", "{x}は保証の対象外ですか？"),
    ("{x}の支払いは完了していますか？", "{x}の支払いが完了していないのはなぜですか？"),
]
JA_NEGATION_PARAPHRASES = [
    (
        "{x}が届きません。どうすればいいですか？",
        "{x}がまだ届かないのですが、どうしたらいいですか？",
    ),
    ("{x}は保証の対象ですか？", "{x}は保証でカバーされますか？"),
]
JA_THINGS = "注文 荷物 ノートパソコン ヘッドホン ジャケット タブレット カメラ ミキサー".split()


def negation_family(
    lang: str, near: list[tuple[str, str]], para: list[tuple[str, str]], things: list[str]
) -> Iterator[Pair]:
    for x in things:
        for a, b in near:
            yield pair(a.format(x=x), b.format(x=x), "near_miss", "negation", lang)
        for a, b in para:
            yield pair(a.format(x=x), b.format(x=x), "paraphrase", "paraphrase", lang)


EN_REVERSAL = (
    ["How do I convert {a} to {b}?", "What's the way to turn {a} into {b}?"],
    ["USD EUR", "PDF Word", "Celsius Fahrenheit", "miles kilometres", "JPG PNG", "CSV Excel"],
)
JA_REVERSAL = (
    ["{a}を{b}に変換するにはどうすればいいですか？", "{a}から{b}への変換方法を教えてください。"],
    ["ドル 円", "PDF ワード", "摂氏 華氏", "マイル キロ", "JPG PNG", "CSV エクセル"],
)


def reversal_family(lang: str, phrasings: list[str], terms: list[str]) -> Iterator[Pair]:
    for both in terms:
        a, b = both.split()
        p, q = phrasings
        yield pair(p.format(a=a, b=b), q.format(a=a, b=b), "paraphrase", "paraphrase", lang)
        yield pair(p.format(a=a, b=b), p.format(a=b, b=a), "near_miss", "reversal", lang)
        yield pair(p.format(a=a, b=b), q.format(a=b, b=a), "near_miss", "reversal", lang)


def pair(a: str, b: str, label: str, kind: str, lang: str) -> Pair:
    return {"a": a, "b": b, "label": label, "kind": kind, "lang": lang}


def generate(seed: int = 11) -> list[Pair]:
    """Every generated pair, each (a, b) once, in a fixed order."""
    rng = random.Random(seed)
    days = [7, 10, 14, 15, 21, 30, 45, 60, 90]
    dollars = [20, 25, 30, 40, 50, 75, 100, 150, 200]
    yen = [1000, 2000, 3000, 5000, 8000, 10000]
    families = [
        relation_family("en", EN_WINDOW_TOPICS, dict(EN_WINDOW_RELATIONS), days, rng, en_number),
        relation_family("en", EN_AMOUNT_TOPICS, dict(EN_AMOUNT_RELATIONS), dollars, rng, en_amount),
        relation_family("ja", JA_WINDOW_TOPICS, dict(JA_WINDOW_RELATIONS), days, rng, ja_number),
        relation_family("ja", JA_AMOUNT_TOPICS, dict(JA_AMOUNT_RELATIONS), yen, rng, ja_number),
        action_family("en", EN_OBJECTS, EN_ADD, EN_REMOVE),
        action_family("ja", JA_OBJECTS, JA_ADD, JA_REMOVE),
        verb_family("en", EN_VERBS, EN_VERB_OBJECTS, EN_VERB_FRAMES, EN_VERB_FIT, rng),
        verb_family("ja", JA_VERBS, JA_VERB_OBJECTS, JA_VERB_FRAMES, JA_VERB_FIT, rng),
        negation_family("en", EN_NEGATION, EN_NEGATION_PARAPHRASES, EN_THINGS),
        negation_family("ja", JA_NEGATION, JA_NEGATION_PARAPHRASES, JA_THINGS),
        reversal_family("en", *EN_REVERSAL),
        reversal_family("ja", *JA_REVERSAL),
        *(slot_family("en", k, p, v, rng) for k, p, v in EN_SLOTS),
        *(slot_family("ja", k, p, v, rng) for k, p, v in JA_SLOTS),
    ]
    seen: set[tuple[str, str]] = set()
    out = []
    for row in itertools.chain.from_iterable(families):
        if row["a"] != row["b"] and (row["a"], row["b"]) not in seen:
            seen.add((row["a"], row["b"]))
            out.append(row)
    return out


def main() -> None:
    rows = generate()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    print(f"wrote {len(rows)} pairs to {OUT}")


if __name__ == "__main__":
    main()
