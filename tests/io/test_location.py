"""Locations: local paths stay paths, URLs and rclone remotes become fsspec paths, secrets stay hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from spora_sd.errors import InvalidArgumentError
from spora_sd.io.location import (
    display_location,
    is_remote,
    parse_storage_options,
    rclone_remote,
    redact,
    redact_options,
    resolve_location,
)


def test_local_paths_stay_pathlib(tmp_path: Path) -> None:
    assert resolve_location(tmp_path) == tmp_path
    assert isinstance(resolve_location(str(tmp_path)), Path)
    assert resolve_location(f"file://{tmp_path}") == tmp_path
    assert not is_remote(tmp_path)


def test_storage_options_refused_for_local_paths(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="storage_options are for remote"):
        resolve_location(tmp_path, {"anon": True})


def test_unknown_storage_option_is_named_with_the_accepted_ones(tmp_path: Path, monkeypatch) -> None:
    # s3fs would only fail at the first request, with a TypeError from deep inside aiobotocore
    with pytest.raises(InvalidArgumentError, match=r"s3://spora/c: storage_options key 'endpoint' .*client_kwargs"):
        resolve_location("s3://spora/c", {"endpoint": "http://127.0.0.1:9000"})
    with pytest.raises(InvalidArgumentError, match=r"key 'bogus' .*fsspec HTTP.*headers"):
        resolve_location("https://example.org/c", {"bogus": 1})
    conf = tmp_path / "rclone.conf"
    conf.write_text("[spora]\ntype = s3\nendpoint = http://127.0.0.1:1\n", encoding="utf-8")
    monkeypatch.setenv("RCLONE_CONFIG", str(conf))
    with pytest.raises(InvalidArgumentError, match=r"spora:b/c: storage_options key 'bogus'"):
        resolve_location("spora:b/c", {"bogus": 1})
    resolve_location("s3://spora/c", {"anon": True, "skip_instance_cache": True, "client_kwargs": {}})


def test_unsupported_scheme_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match="unsupported URL scheme 'gs'"):
        resolve_location("gs://bucket/cohort")


def test_s3_url_reads_from_the_server(s3_server, small_cohort: Path) -> None:
    url = s3_server.upload_folder(small_cohort / "metadata", "location-test/metadata")
    path = resolve_location(url, s3_server.storage_options)
    assert is_remote(path)
    assert (path / "tissues.parquet").read_bytes() == (small_cohort / "metadata" / "tissues.parquet").read_bytes()
    assert display_location(path) == "s3://spora/location-test/metadata"


def test_aws_variables_are_enough(s3_server, small_cohort: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3_server.upload_folder(small_cohort / "metadata", "location-env/metadata")
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    path = resolve_location("s3://spora/location-env/metadata")
    assert (path / "tissues.parquet").exists()


def test_rclone_remote_is_read_like_rclone(s3_server, small_cohort: Path, tmp_path: Path, monkeypatch) -> None:
    s3_server.upload_folder(small_cohort / "metadata", "location-rclone/metadata")
    conf = s3_server.rclone_config(tmp_path / "rclone.conf", remote="spora")
    monkeypatch.setenv("RCLONE_CONFIG", str(conf))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    path = resolve_location("spora:spora/location-rclone/metadata")
    assert (path / "tissues.parquet").exists()
    remote = rclone_remote("spora")
    assert "do-not-print" not in repr(remote)
    assert "do-not-print" not in repr(path) and "do-not-print" not in display_location(path)


def test_rclone_errors_name_the_file_and_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "rclone.conf"
    monkeypatch.setenv("RCLONE_CONFIG", str(conf))
    with pytest.raises(InvalidArgumentError, match="no rclone configuration file"):
        resolve_location("spora:spora/x")
    conf.write_text("[other]\ntype = s3\n")
    with pytest.raises(InvalidArgumentError, match=r"no rclone remote named 'spora' \(remotes there: other\)"):
        resolve_location("spora:spora/x")
    conf.write_text("[spora]\ntype = drive\n")
    with pytest.raises(InvalidArgumentError, match="of type 'drive'"):
        resolve_location("spora:spora/x")
    conf.write_text("RCLONE_ENCRYPT_V0:\nabcdef")
    with pytest.raises(InvalidArgumentError, match="encrypted"):
        resolve_location("spora:spora/x")


def test_secrets_are_redacted() -> None:
    assert redact("https://u:p@h/x") == "https://***@h/x"
    opts = redact_options({"key": "AKIA", "secret": "s", "token": "t", "anon": False, "client_kwargs": {"x": 1}})
    assert opts == {"key": "***", "secret": "***", "token": "***", "anon": False, "client_kwargs": {"x": 1}}


def test_cli_storage_options_parse() -> None:
    assert parse_storage_options(["anon=true", "a.b=3"]) == {"anon": True, "a": {"b": 3}}
    with pytest.raises(InvalidArgumentError, match="KEY=VALUE"):
        parse_storage_options(["novalue"])
