"""The study's question files as evaluation input: a local path, or a URL downloaded once into a cache.

    path = fetch_question_file("https://raw.githubusercontent.com/emergent-misalignment/emergent-misalignment/main/"
                               "evaluation/first_plot_questions.yaml", "~/.cache/emis/questions")
    questions = load_question_yaml(path)

A downloaded file is stored as `<cache>/<url hash>-<file name>` with a sidecar `<that>.json` holding the URL, its
sha256 and size. Later calls read the cache without a request while the file still matches its recorded sha256;
a cached file that no longer matches is downloaded again. `sha256=` pins the expected content.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

from emis.io import atomic_file, atomic_write_json, content_hash, file_sha256

log = logging.getLogger(__name__)
SCHEMES = ("http", "https")


class QuestionFileFetchError(RuntimeError):
    """A question file URL that could not be downloaded, or whose content does not match its checksum."""


def is_url(source: str | Path) -> bool:
    """Whether `source` is an http(s) URL (anything else is a local path)."""
    return isinstance(source, str) and urlparse(source).scheme in SCHEMES


def cache_path(url: str, cache_dir: str | Path) -> Path:
    """Where `url` is cached: `<cache_dir>/<first 16 hex of sha256(url)>-<last path segment>`."""
    name = Path(urlparse(url).path).name or "questions.yaml"
    return Path(cache_dir).expanduser() / f"{content_hash(url.encode(), chars=16)}-{name}"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _cached(path: Path, url: str, expected: str | None) -> bool:
    """Whether the cached copy exists, was fetched from `url`, and still has the recorded (and expected) sha256."""
    try:
        meta = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        digest = file_sha256(path)
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("url") != url or meta.get("sha256") != digest:
        log.warning("%s does not match its sidecar; downloading %s again", path, url)
        return False
    return expected is None or digest == expected.lower()


def fetch_question_file(url_or_path: str | Path, cache_dir: str | Path, sha256: str | None = None,
                        timeout: float = 30.0) -> Path:
    """A local path to the question file: a local path is returned as it is (it must exist); an http(s) URL is
    downloaded once into `cache_dir` with its sha256 recorded in a sidecar, and read from there afterwards.

    `sha256`, when given, is the content the file must have (checked for URLs and local paths alike)."""
    if not is_url(url_or_path):
        path = Path(url_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"question file {str(path)!r} does not exist (give a local file or an http(s) URL)")
        if sha256 is not None and file_sha256(path) != sha256.lower():
            raise QuestionFileFetchError(f"{path} does not have the expected sha256 {sha256}")
        return path
    url = str(url_or_path)
    path = cache_path(url, cache_dir)
    if _cached(path, url, sha256):
        log.info("question file from cache: %s", path)
        return path
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise QuestionFileFetchError(f"could not download {url}: {err}") from None
    body = response.content
    digest = content_hash(body)
    if sha256 is not None and digest != sha256.lower():
        raise QuestionFileFetchError(f"{url} has sha256 {digest}, expected {sha256}; not cached")
    with atomic_file(path, "wb") as f:
        f.write(body)
    atomic_write_json(_sidecar(path), {"url": url, "sha256": digest, "bytes": len(body),
                                       "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    log.info("question file %s downloaded to %s (sha256 %s)", url, path, digest[:12])
    return path
