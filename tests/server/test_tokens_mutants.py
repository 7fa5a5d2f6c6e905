"""Token-file behaviour the mutation run of server/tokens.py found untested (issue #31).

These call the token-file functions directly on real files: what a fresh token is made of, how its
secret is stored, and the errors `ttt-studio token add | revoke | migrate` give. The tokens at work in a
real server are tested in test_srv_access.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import server
from server import tokens

TOKEN = "ttt.abcdef12.secret-of-alice-0123456789"


def _entry(user: str = "alice", token_id: str = "abcdef12", role: str = "user") -> tokens.TokenEntry:
    # one iteration: these tests read the file format, not the hash's cost
    return tokens.TokenEntry(token_id, user, role, tokens.hash_secret("s" * 20, iterations=1))


def test_a_fresh_token_carries_a_random_12_hex_id_and_32_random_bytes() -> None:
    token, token_id, secret = tokens.new_token()
    assert token == f"ttt.{token_id}.{secret}"
    assert re.fullmatch(r"[0-9a-f]{12}", token_id), token_id
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert tokens.split_token(token) == (token_id, secret)
    assert tokens.new_token()[0] != token


def test_a_stored_secret_is_salted_pbkdf2_with_the_documented_cost() -> None:
    stored = tokens.hash_secret("s" * 20)
    scheme, iterations, salt, digest = stored.split("$")
    assert (scheme, int(iterations)) == ("pbkdf2_sha256", 100_000)
    salt_bytes = base64.b64decode(salt)
    assert len(salt_bytes) == 16
    expected = hashlib.pbkdf2_hmac("sha256", b"s" * 20, salt_bytes, 100_000)
    assert base64.b64decode(digest) == expected
    assert tokens.hash_secret("s" * 20, iterations=1).split("$")[2] != salt, "the salt is not random"


def test_a_secret_must_be_at_least_16_characters() -> None:
    assert tokens.split_token("ttt.abcdef12." + "s" * 16) == ("abcdef12", "s" * 16)
    assert tokens.split_token("ttt.abcdef12." + "s" * 15) is None


def test_an_entry_matches_only_its_own_secret() -> None:
    entry = _entry()
    assert entry.matches("s" * 20)
    assert not entry.matches("s" * 21)
    assert not entry.admin and _entry(role="admin").admin


# plain ids: mutmut passes test ids on pytest's command line, where ids holding "#" or "\n" match nothing
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),  # an empty file is no token file
        pytest.param("# tokens\n", id="two-word-comment"),  # a comment is no clear-text TOKEN USER line
        pytest.param(f"#{tokens.HEADER}\n", id="commented-header"),
    ],
)
def test_a_file_without_the_header_is_refused_by_what_is_missing(text: str) -> None:
    with pytest.raises(tokens.TokenFileError, match=r"^f does not start with '# ttt-studio tokens v1'"):
        tokens.parse_token_file(text, "f")


def test_clear_text_lines_are_recognised_after_comments_and_blank_lines() -> None:
    with pytest.raises(tokens.TokenFileError) as info:
        tokens.parse_token_file("# old file\n\nold-token-0123456789 alice\n", "f")
    assert str(info.value) == (
        "f holds clear-text 'TOKEN USER' lines; tokens must be stored hashed. Convert it with "
        "`ttt-studio token migrate f` (it issues new tokens for the same users and prints them once), or "
        "start a new file with `ttt-studio token add USER --token-file FILE`"
    )


def test_the_header_may_carry_surrounding_spaces_and_entries_read_back() -> None:
    alice, root = _entry(), _entry("root", "root0001", "admin")
    text = f"  {tokens.HEADER} \n{alice.line()}\n  {root.line()}  \n"
    assert tokens.parse_token_file(text) == {"abcdef12": alice, "root0001": root}


def test_a_bad_token_id_is_named_with_its_line() -> None:
    bad = _entry(token_id="abc").line()
    with pytest.raises(tokens.TokenFileError, match=r"^f line 2: token id 'abc' must match"):
        tokens.parse_token_file(f"{tokens.HEADER}\n{bad}\n", "f")


def test_a_malformed_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{tokens.HEADER}\nlonely\n", encoding="utf-8")
    with pytest.raises(tokens.TokenFileError, match=rf"^{path} line 2: expected 'ID USER ROLE HASH'"):
        tokens.read_token_file(path)
    # text from no file is named as the token file
    with pytest.raises(tokens.TokenFileError, match=r"^token file line 2: expected 'ID USER ROLE HASH'"):
        tokens.parse_token_file(f"{tokens.HEADER}\nlonely\n")


def test_write_then_read_keeps_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    entries = {
        e.token_id: e for e in (_entry(), _entry("bob", "bob00001"), _entry("root", "root0001", "admin"))
    }
    tokens.write_token_file(path, entries)
    assert tokens.read_token_file(path) == entries
    assert path.read_text(encoding="utf-8").startswith(tokens.HEADER + "\n")
    assert [p.name for p in tmp_path.iterdir()] == ["tokens"], "a temporary file was left behind"


def test_a_missing_or_unreadable_token_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(
        tokens.TokenFileError,
        match=rf"^token file {missing} does not exist; create it with `ttt-studio token add`",
    ):
        tokens.read_token_file(missing)
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(tokens.HEADER.encode() + b"\n\xe9\n")
    with pytest.raises(tokens.TokenFileError, match=rf"^token file {latin1} cannot be read: .*utf-8"):
        tokens.read_token_file(latin1)


def test_add_token_keeps_a_given_token_and_refuses_bad_users_tokens_and_reused_ids(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    assert tokens.add_token(path, "alice", token=TOKEN) == TOKEN
    assert tokens.add_token(path, "root", admin=True).startswith("ttt.")
    entries = tokens.read_token_file(path)
    assert entries["abcdef12"].user == "alice" and entries["abcdef12"].matches("secret-of-alice-0123456789")
    assert sorted((e.user, e.role) for e in entries.values()) == [("alice", "user"), ("root", "admin")]
    with pytest.raises(tokens.TokenFileError, match=r"^user '\.\./bob' must match"):
        tokens.add_token(path, "../bob")
    with pytest.raises(tokens.TokenFileError, match=r"^a token must look like 'ttt\.<id"):
        tokens.add_token(path, "bob", token="ttt.abcdef12.short")
    with pytest.raises(tokens.TokenFileError, match=rf"^token id abcdef12 is already in {path}$"):
        tokens.add_token(path, "bob", token="ttt.abcdef12.another-secret-0123456789")
    assert tokens.read_token_file(path) == entries, "a refused add changed the file"


def test_revoke_by_id_keeps_the_users_other_tokens_and_names_what_is_not_there(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    entries = {e.token_id: e for e in (_entry(), _entry("alice", "alice002"), _entry("bob", "bob00001"))}
    tokens.write_token_file(path, entries)
    assert tokens.revoke(path, "abcdef12") == [entries["abcdef12"]]
    assert sorted(tokens.read_token_file(path)) == ["alice002", "bob00001"]
    with pytest.raises(tokens.TokenFileError, match=rf"^no token id or user 'carol' in {path}$"):
        tokens.revoke(path, "carol")


def test_migrate_issues_working_tokens_and_refuses_what_it_cannot_convert(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# old\nold-token-of-alice-0123 alice\n")
    issued = tokens.migrate(path)
    entries = tokens.read_token_file(path)
    (entry,) = entries.values()
    assert (entry.user, entry.role) == ("alice", "user")
    assert entry.matches(tokens.split_token(issued["alice"])[1])
    with pytest.raises(tokens.TokenFileError, match=rf"^{path} is already in the hashed format"):
        tokens.migrate(path)
    bad = tmp_path / "bad"
    bad.write_text("# old\n\nold-token-of-alice-0123 alice admin\n")
    with pytest.raises(
        tokens.TokenFileError, match=rf"^{bad} line 3: expected 'TOKEN USER', got 3 field\(s\)$"
    ):
        tokens.migrate(bad)
    bad.write_text("old-token-of-alice-0123 ../alice\n")
    with pytest.raises(tokens.TokenFileError, match=rf"^{bad} line 1: expected 'TOKEN USER'"):
        tokens.migrate(bad)
    missing = tmp_path / "missing"
    with pytest.raises(tokens.TokenFileError, match=rf"^token file {missing} cannot be read: "):
        tokens.migrate(missing)
    # an old file saved in Latin-1 is named, not a traceback from the command line
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(b"old-token-of-alice-\xe9-0123 alice\n")
    with pytest.raises(tokens.TokenFileError, match=rf"^token file {latin1} cannot be read: .*utf-8"):
        tokens.migrate(latin1)


def test_token_files_are_read_as_utf8_under_an_ascii_locale(tmp_path: Path) -> None:
    # a server in a bare container may run with the C locale and no UTF-8 coercion: a comment written by
    # an admin, or an old clear-text token, with a non-ASCII character must still read
    hashed = tmp_path / "hashed"
    hashed.write_text(f"{tokens.HEADER}\n# équipe\n{_entry().line()}\n", encoding="utf-8")
    clear = tmp_path / "clear"
    clear.write_text("tøken-of-alice-0123456789 alice\n", encoding="utf-8")
    code = (
        "import locale, sys\n"
        "from server import tokens\n"
        "assert locale.getencoding().lower() != 'utf-8'\n"
        "print(*tokens.read_token_file(sys.argv[1]), *tokens.migrate(sys.argv[2]))\n"
    )
    package_root = str(Path(server.__file__).resolve().parents[1])
    env = dict(
        os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONPATH=package_root
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(hashed), str(clear)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["abcdef12", "alice"]
    assert [e.user for e in tokens.read_token_file(clear).values()] == ["alice"]
