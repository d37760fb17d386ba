"""Job-line validation: every kind of bad line is a clear error naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.core.intake import LineError, read_file
from pipeline.errors import InputError
from pipeline.models import Task, TTLClass


def parse(
    tmp_path: Path, *lines: bytes | dict[str, object], limit: int = 10_000
) -> list[Task | LineError]:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(
        b"".join((ln if isinstance(ln, bytes) else orjson.dumps(ln)) + b"\n" for ln in lines)
    )
    return list(read_file(path, max_line_bytes=limit))


def only_error(entries: list[Task | LineError]) -> LineError:
    errors = [e for e in entries if isinstance(e, LineError)]
    assert len(errors) == 1, entries
    return errors[0]


def test_native_line_becomes_a_task(tmp_path: Path) -> None:
    (task,) = parse(
        tmp_path,
        {
            "id": "a",
            "prompt": "Hi",
            "system": "Be brief.",
            "task_type": "faq",
            "ttl_class": "real_time",
            "tenant": "t1",
            "metadata": {"k": 1},
        },
    )
    assert isinstance(task, Task)
    assert (task.id, task.prompt, task.system, task.tenant) == ("a", "Hi", "Be brief.", "t1")
    assert task.ttl_class is TTLClass.real_time and task.metadata == {"k": 1}
    assert task.line == 1


def test_openai_batch_line_is_accepted_unchanged(tmp_path: Path) -> None:
    line = {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "max_tokens": 20,
            "messages": [
                {"role": "system", "content": "Translate."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            ],
        },
    }
    (task,) = parse(tmp_path, line)
    assert isinstance(task, Task)
    assert (task.id, task.requested_model, task.max_tokens) == ("r1", "gpt-4o-mini", 20)
    assert task.system == "Translate." and task.prompt == "Hello"


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ({"prompt": ""}, "prompt", "empty prompt"),
        ({"prompt": "x", "ttl_class": "forever"}, "ttl_class", "static_knowledge"),
        ({"prompt": "x", "task_type": "poem"}, "task_type", "unknown task_type"),
        ({"prompt": "x", "max_tokens": -5}, "max_tokens", "greater than 0"),
        ({"prompt": "x", "temperature": 5}, "temperature", "less than or equal to 2"),
        ({"prompt": "x", "promt": "typo"}, "promt", "unknown field"),
        ({"system": "only a system prompt"}, "prompt", "missing"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "prompt", "not both"),
        ({"messages": [{"role": "assistant", "content": "y"}]}, "messages", "end with a user"),
    ],
)
def test_bad_fields_name_line_and_field(
    tmp_path: Path, line: dict[str, object], field: str, words: str
) -> None:
    error = only_error(parse(tmp_path, {"prompt": "fine"}, line))
    assert error.line == 2 and error.field == field
    assert words in error.reason
    assert str(error).startswith(f"{tmp_path / 'jobs.jsonl'}:2:")


def test_not_an_object_invalid_json_and_invalid_utf8(tmp_path: Path) -> None:
    entries = parse(tmp_path, b"[1, 2]", b"{not json", b'{"prompt": "caf\xe9"}', {"prompt": "ok"})
    errors = [e for e in entries if isinstance(e, LineError)]
    assert [e.line for e in errors] == [1, 2, 3]
    assert "JSON object" in errors[0].reason
    assert "not valid JSON" in errors[1].reason
    assert "UTF-8" in errors[2].reason
    assert isinstance(entries[-1], Task)


def test_duplicate_ids_are_refused_after_the_first(tmp_path: Path) -> None:
    entries = parse(tmp_path, {"id": "same", "prompt": "a"}, {"id": "same", "prompt": "b"})
    assert isinstance(entries[0], Task)
    error = only_error(entries)
    assert error.line == 2 and "duplicate id 'same'" in error.reason


def test_overlong_line_is_skipped_and_the_next_line_goes_on(tmp_path: Path) -> None:
    huge = orjson.dumps({"prompt": "x" * 5000})
    entries = parse(tmp_path, huge, {"id": "after", "prompt": "fine"}, limit=1000)
    assert "longer than the limit" in only_error(entries).reason
    assert isinstance(entries[1], Task) and entries[1].id == "after"


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path: Path) -> None:
    entries = parse(tmp_path, b"", {"prompt": "a"}, b"   ", {"prompt": "b"})
    assert [e.line for e in entries if isinstance(e, Task)] == [2, 4]


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(read_file(tmp_path / "nope.jsonl", max_line_bytes=100))


def test_file_is_streamed_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as fh:
        for i in range(20_000):
            fh.write(orjson.dumps({"id": str(i), "prompt": f"q{i}"}) + b"\n")
    stream = read_file(path, max_line_bytes=1000)
    first = next(stream)
    assert isinstance(first, Task) and first.id == "0"  # yielded before the file was read whole
    assert sum(1 for _ in stream) == 19_999
