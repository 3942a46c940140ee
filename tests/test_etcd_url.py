"""``etcd://`` and ``etcds://`` registry URLs: what they mean, what they refuse, and
that a password never shows (no etcd needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemacache import ValidationError, open_registry
from schemacache.registry.etcd_conn import PASSWORD_ENV, parse_etcd_url

SECRET = "s3cr3t-value"


def test_full_url_with_password_from_the_environment() -> None:
    access = parse_etcd_url("etcds://app@db1:2379,db2:2380/team/schemas?ca=/c.pem"
                            "&cert=/cl.pem&key=/cl-key.pem&server_name=etcd.internal",
                            environ={PASSWORD_ENV: SECRET})
    assert access.endpoints == (("db1", 2379), ("db2", 2380))
    assert (access.tls, access.prefix, access.user) == (True, "team/schemas", "app")
    assert (access.ca, access.cert, access.key) == ("/c.pem", "/cl.pem", "/cl-key.pem")
    assert access.server_name == "etcd.internal"
    assert access.read_password() == SECRET
    assert access.url == "etcds://app@db1:2379,db2:2380/team/schemas"
    assert SECRET not in repr(access) and SECRET not in access.url


def test_defaults_and_plain_etcd_with_a_user() -> None:
    access = parse_etcd_url("etcds://db", environ={})
    assert (access.endpoints, access.prefix, access.user, access.ca) == (
        (("db", 2379),), "schemacache", None, None)
    plain = parse_etcd_url("etcd://app@127.0.0.1:2379/p", environ={PASSWORD_ENV: SECRET})
    assert not plain.tls and plain.user == "app" and plain.url == "etcd://app@127.0.0.1:2379/p"


def test_password_file_is_read_on_each_authentication(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    access = parse_etcd_url(f"etcds://app@db/p?password_file={path}",
                            environ={PASSWORD_ENV: "ignored"})
    assert access.read_password() == SECRET
    path.write_text("rotated\n")
    assert access.read_password() == "rotated"
    path.unlink()
    with pytest.raises(ValidationError, match="cannot read etcd password file"):
        access.read_password()


@pytest.mark.parametrize(("url", "message"), [
    (f"etcds://app:{SECRET}@db/p", "a password never goes in the URL"),
    ("etcds://app@db/p", f"needs a password: set {PASSWORD_ENV} or add ?password_file="),
    ("etcds://db/p?password_file=/x", "password_file= needs a user"),
    ("etcds://db/p?cacert=/x", "unknown option cacert"),
    ("etcd://db/p?ca=/x", "need TLS: use etcds://"),
    ("etcds://db/p?cert=/x", "needs both cert= and key="),
    ("etcds:///p", "no endpoints"),
    ("etcds://db:port/p", "bad etcd endpoint"),
])
def test_bad_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("?", r"\?")) as err:
        parse_etcd_url(url, environ={})
    assert SECRET not in str(err.value)


def test_open_registry_never_repeats_a_password() -> None:
    for url in (f"etcds://app:{SECRET}@db/p", f"etcd://app:{SECRET}@db/p",
                f"redis://app:{SECRET}@db/p"):
        with pytest.raises(ValidationError) as err:
            open_registry(url)
        assert SECRET not in str(err.value)
