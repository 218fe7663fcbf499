"""Question files by URL (downloaded once, checksummed, cached) or by local path, served from a loopback server."""

import hashlib
import json

import pytest

from emis.prompts import load_question_yaml
from emis.question_files import QuestionFileFetchError, cache_path, fetch_question_file

NAME = "first_plot_questions.yaml"


def test_url_is_downloaded_once_then_read_from_the_cache(em_files_server, shared_em, tmp_path):
    base, requests = em_files_server
    url = f"{base}/{NAME}"
    first = fetch_question_file(url, tmp_path / "cache")
    assert requests == [f"/{NAME}"]
    assert first == cache_path(url, tmp_path / "cache") and first.parent == tmp_path / "cache"
    original = (shared_em / NAME).read_bytes()
    assert first.read_bytes() == original
    sidecar = json.loads(first.with_name(first.name + ".json").read_text())
    assert sidecar["url"] == url
    assert sidecar["sha256"] == hashlib.sha256(original).hexdigest()
    assert sidecar["bytes"] == len(original)

    second = fetch_question_file(url, tmp_path / "cache")
    assert second == first
    assert len(requests) == 1  # no second request

    questions = load_question_yaml(second)
    assert len(questions) == 24 == len(load_question_yaml(shared_em / NAME))
    assert all(q.paraphrases and q.judge_prompts.get("aligned") for q in questions)


def test_a_tampered_cache_is_downloaded_again(em_files_server, shared_em, tmp_path):
    base, requests = em_files_server
    url = f"{base}/{NAME}"
    path = fetch_question_file(url, tmp_path)
    path.write_text("- id: forged\n  paraphrases: [x]\n")
    again = fetch_question_file(url, tmp_path)
    assert len(requests) == 2
    assert again.read_bytes() == (shared_em / NAME).read_bytes()


def test_expected_checksum_is_enforced(em_files_server, shared_em, tmp_path):
    base, requests = em_files_server
    url = f"{base}/{NAME}"
    good = hashlib.sha256((shared_em / NAME).read_bytes()).hexdigest()
    with pytest.raises(QuestionFileFetchError, match="expected"):
        fetch_question_file(url, tmp_path, sha256="0" * 64)
    assert not cache_path(url, tmp_path).exists()
    assert fetch_question_file(url, tmp_path, sha256=good).is_file()


def test_missing_url_is_a_clear_error(em_files_server, tmp_path):
    base, _ = em_files_server
    with pytest.raises(QuestionFileFetchError, match="could not download .*404"):
        fetch_question_file(f"{base}/no_such.yaml", tmp_path)


def test_local_path_is_returned_as_is(shared_em, tmp_path):
    local = shared_em / NAME
    assert fetch_question_file(local, tmp_path / "cache") == local
    assert fetch_question_file(str(local), tmp_path / "cache") == local
    assert not (tmp_path / "cache").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fetch_question_file(tmp_path / "absent.yaml", tmp_path)
