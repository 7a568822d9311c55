import hashlib
import subprocess

import utils.core.version as version
from utils.core.version import ROOT, code_version, source_digest, version_words
from utils.report import code_text


def test_in_a_git_checkout_the_version_is_the_commit_and_whether_tracked_files_differ():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        assert set(code_version()) == {"source_sha1"}
        return
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True).stdout.strip()
    assert code_version() == {"commit": head.stdout.strip(), "dirty": bool(changed)}


def test_without_git_the_version_is_a_digest_of_the_source(monkeypatch):
    def no_git(*args):
        raise OSError("git: not found")

    monkeypatch.setattr(version, "_git", no_git)
    version.code_version.cache_clear()
    try:
        assert code_version() == {"source_sha1": source_digest()}
    finally:
        version.code_version.cache_clear()


def test_the_source_digest_is_the_naive_sha1_over_sorted_paths_and_bytes(tmp_path, monkeypatch):
    (tmp_path / "utils").mkdir()
    (tmp_path / "main_x.py").write_text("a = 1\n")
    (tmp_path / "utils" / "b.py").write_text("b = 2\n")
    (tmp_path / "notes.txt").write_text("not source\n")
    monkeypatch.setattr(version, "ROOT", tmp_path)
    expected = hashlib.sha1(b"main_x.py\0a = 1\n" + b"utils/b.py\0b = 2\n").hexdigest()
    assert source_digest() == expected
    (tmp_path / "utils" / "b.py").write_text("b = 3\n")
    assert source_digest() != expected


def test_the_report_shows_the_training_code_and_the_evaluating_code_where_they_differ():
    a, b = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}
    assert version_words(a) == "aaaaaaa" and version_words(b) == "bbbbbbb+changes" and version_words(None) == "?"
    assert version_words({"source_sha1": "c" * 40}) == "source cccccccccccc"
    assert code_text({"train_code": [a], "code": a}) == "aaaaaaa"
    assert code_text({"train_code": [a, b], "code": b}) == "aaaaaaa then bbbbbbb+changes; evaluated by bbbbbbb+changes"
    assert code_text({}) == "?; evaluated by ?"
