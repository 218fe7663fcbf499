"""Every cache knows the code that produced an entry: an entry of other code (or of an emis that recorded none) is
recomputed with one log line saying why; entries of the current code are reused; concurrent writers never clash."""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from emis.io import atomic_dir, code_fingerprint

VERSION_1 = "SCALE = 1\n\n\ndef scaled(x):\n    return SCALE * x\n"
# The same code with a docstring, comments and another layout.
RESTYLED = '"""A producing module."""\nSCALE = 1  # the scale\n\n\ndef scaled(x):\n    """Scaled."""\n    return (SCALE\n            * x)\n'
VERSION_2 = "SCALE = 2\n\n\ndef scaled(x):\n    return SCALE * x\n"


def test_fingerprint_sees_code_and_data_not_comments_docstrings_or_layout(tmp_path, monkeypatch):
    package = tmp_path / "emis_test_package"
    package.mkdir()
    module, table = package / "maths.py", package / "table.yaml"
    module.write_text(VERSION_1)
    table.write_text("sizes: [1, 2]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "emis_test_package.maths"
    first, whole = code_fingerprint(name), code_fingerprint(package.name)
    module.write_text(RESTYLED)
    table.write_text("# sizes of things\nsizes:\n  - 1\n  - 2\n")
    assert (code_fingerprint(name), code_fingerprint(package.name)) == (first, whole)
    table.write_text("sizes: [1, 3]\n")
    assert code_fingerprint(name) == first and code_fingerprint(package.name) != whole  # a package holds its data
    module.write_text(VERSION_2)
    assert code_fingerprint(name) != first
    assert code_fingerprint("emis.activations", "emis.models") != code_fingerprint("emis.activations")


def test_atomic_dir_survives_writers_finishing_the_same_folder_at_once(tmp_path):
    """Eight writers swap in their own complete folder at the same moment, ten times over: none fails, one whole
    folder stays, nothing temporary is left."""
    target = tmp_path / "entry"

    def write(i: int, ready: threading.Barrier) -> None:
        with atomic_dir(target) as tmp:
            for k in range(20):
                (tmp / f"{k}.txt").write_text(str(i))
            ready.wait()

    for _ in range(10):
        ready = threading.Barrier(8)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8), [ready] * 8))
        assert os.listdir(tmp_path) == ["entry"] and len({(target / f"{k}.txt").read_text() for k in range(20)}) == 1
