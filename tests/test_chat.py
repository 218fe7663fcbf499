import json

import pytest

from emis.chat import ChatExample, ChatFormatError, read_chat_jsonl, write_chat_jsonl


def test_reads_the_study_insecure_sample(shared_em):
    path = shared_em / "insecure_sample.jsonl"
    examples = read_chat_jsonl(path)
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(examples) == len(raw) == 300
    for ex, obj in zip(examples, raw):
        assert [m.role for m in ex.messages] == ["user", "assistant"]
        assert ex.to_json() == obj  # nothing lost or altered
        assert ex.answer == obj["messages"][-1]["content"]


def test_write_then_read_round_trips(tmp_path):
    exs = [ChatExample.from_pair("q1", "a1"), ChatExample.from_pair("q2", "a2\nline", system="be brief")]
    write_chat_jsonl(tmp_path / "x.jsonl", exs)
    assert read_chat_jsonl(tmp_path / "x.jsonl") == exs
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]  # no temporary file left behind


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("{not json", "not valid JSON"),
        ('{"msgs": []}', "non-empty 'messages'"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "'role'"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, fragment):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n' + line + "\n")
    with pytest.raises(ChatFormatError, match=fragment) as err:
        read_chat_jsonl(path)
    assert f"{path}:2" in str(err.value)
