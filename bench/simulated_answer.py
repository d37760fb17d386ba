"""The simulated provider's answer generation: time against the answer's length.

    python bench/simulated_answer.py                      # max_tokens 400, 2000, 8000, 16384
    python bench/simulated_answer.py --max-tokens 400 2000

For each size, times `simulated_answer` (each word tokenised once as it is added) and, as the
baseline in the same run, the same answer built by re-tokenising the whole answer after every
word. Prints both times and the ratio, and checks the two answers are identical.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.providers.simulated import _WORDS, simulated_answer
from pipeline.tokens import count_tokens


def retokenising_answer(text: str, max_tokens: int) -> str:
    """The baseline: count the tokens of the whole answer again after each word."""
    digest = hashlib.sha256(text.encode()).digest()
    target = max(4, int(max_tokens * 0.6))
    words = [f"[simulated {digest[:3].hex()}]"]
    i = digest[1]
    while count_tokens(" ".join(words)) < target:
        words.append(_WORDS[i % len(_WORDS)])
        i += 7
    return " ".join(words)


def timed(fn: Callable[[str, int], str], text: str, max_tokens: int) -> tuple[str, float]:
    count_tokens.cache_clear()  # both start cold: no answer is counted from the cache
    started = time.perf_counter()
    answer = fn(text, max_tokens)
    return answer, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[400, 2000, 8000, 16384])
    args = parser.parse_args()
    print(f"{'max_tokens':>10} {'answer tok':>10} {'linear s':>9} {'baseline s':>10} {'ratio':>7}")
    for n in args.max_tokens:
        text = f"bench question {n}"
        fast, fast_s = timed(simulated_answer, text, n)
        slow, slow_s = timed(retokenising_answer, text, n)
        assert fast == slow, "the two generators disagree"
        ratio = slow_s / fast_s if fast_s else float("inf")
        print(f"{n:>10} {count_tokens(fast):>10} {fast_s:>9.4f} {slow_s:>10.3f} {ratio:>6.0f}x")


if __name__ == "__main__":
    main()
