"""`NAME_FILE` variants of every setting (services/common/env.py): secrets mounted as files."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.env import ConfigError, env_int, env_opt, env_str
from services.edge.settings import EdgeSettings


def test_a_setting_is_read_from_the_file_named_by_its_file_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("s3cret-from-a-mounted-secret\n")  # `echo ... > file` adds a newline
    monkeypatch.delenv("DOCGEN_X", raising=False)
    monkeypatch.setenv("DOCGEN_X_FILE", str(secret))
    assert env_opt("DOCGEN_X") == "s3cret-from-a-mounted-secret"
    assert env_str("DOCGEN_X", "default") == "s3cret-from-a-mounted-secret"

    (tmp_path / "n").write_text("42")
    monkeypatch.setenv("DOCGEN_N_FILE", str(tmp_path / "n"))
    assert env_int("DOCGEN_N", 1) == 42


def test_only_one_trailing_newline_is_dropped_and_an_empty_file_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crlf").write_bytes(b"value \r\n")
    monkeypatch.setenv("DOCGEN_X_FILE", str(tmp_path / "crlf"))
    assert env_opt("DOCGEN_X") == "value "
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("DOCGEN_X_FILE", str(tmp_path / "empty"))
    assert env_opt("DOCGEN_X") is None
    assert env_str("DOCGEN_X", "default") == "default"


def test_both_the_variable_and_its_file_variant_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "v").write_text("from-file")
    monkeypatch.setenv("DOCGEN_X", "from-env")
    monkeypatch.setenv("DOCGEN_X_FILE", str(tmp_path / "v"))
    with pytest.raises(ConfigError, match="DOCGEN_X or DOCGEN_X_FILE, not both"):
        env_opt("DOCGEN_X")


def test_an_unreadable_file_names_the_variable_and_not_the_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCGEN_X_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"DOCGEN_X_FILE='.*missing' cannot be read"):
        env_opt("DOCGEN_X")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00secret")
    monkeypatch.setenv("DOCGEN_X_FILE", str(tmp_path / "binary"))
    with pytest.raises(ConfigError, match="not UTF-8 text") as caught:
        env_opt("DOCGEN_X")
    assert "secret" not in str(caught.value).replace("DOCGEN_X_FILE", "")


def test_the_edge_takes_its_jwt_secret_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "a-mounted-secret-of-more-than-thirty-two-bytes-0123456789"
    (tmp_path / "jwt").write_text(secret + "\n")
    monkeypatch.delenv("DOCGEN_JWT_SECRET", raising=False)
    monkeypatch.setenv("DOCGEN_JWT_SECRET_FILE", str(tmp_path / "jwt"))
    assert EdgeSettings.from_env().jwt_secret == secret
