"""One secret per role, with no server: where a role's secret is found, how generated ones
are kept (0600, atomically, once), what is refused, and that a process reads its own role's
secret alone. (Logging in with them, and being refused with another role's, is
tests/integration/test_secrets.py, on a server that asks for passwords.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from db.provision import scram_verifier
from workers.operations import namespace
from workers.runtime import role_secrets
from workers.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    """``fleet *args`` in this test's environment, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def keep(path: Path, secret_of: dict[str, str], file_mode: int = 0o600) -> None:
    """A secrets file as an operator (or another tool) might have written it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps(secret_of))
    path.chmod(file_mode)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "staging.secrets.json"


# --- Where a role's secret is found ------------------------------------------------------


def test_the_default_file_is_in_the_user_s_config_directory_per_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert Settings(namespace="staging").secrets_path == (
        tmp_path / "xdg" / "fleet" / "staging.secrets.json"
    )
    # The XDG rule: a relative XDG_CONFIG_HOME is ignored.
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/config")
    assert Settings().secrets_path == Path.home() / ".config" / "fleet" / "fleet.secrets.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert Settings().secrets_path == Path.home() / ".config" / "fleet" / "fleet.secrets.json"


def test_fleet_secrets_file_sets_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEET_SECRETS_FILE", str(tmp_path / "mine.json"))
    assert Settings().secrets_path == tmp_path / "mine.json"
    monkeypatch.setenv("FLEET_SECRETS_FILE", "~/fleet.json")
    assert Settings().secrets_path == Path.home() / "fleet.json"


def test_a_role_s_secret_is_the_one_given_else_the_one_kept(path: Path) -> None:
    keep(path, {"staging_payment": "kept-payment", "staging_ops": "kept-ops"})
    settings = Settings(
        namespace="staging",
        secrets_file=path,
        db_secrets={"payment": "given-payment", "inventory": "given-inventory"},
        db_urls={"inventory": "postgresql://staging_inventory:in%40url@db:5432/staging_inventory"},
    )
    assert settings.secret_for("payment") == "given-payment"  # FLEET_DB_SECRETS first
    assert settings.secret_for("inventory") == "in@url"  # the URL's own password before it
    assert settings.secret_for("ops") == "kept-ops"  # else the file
    with pytest.raises(role_secrets.MissingSecret, match=r"no secret for role staging_order "):
        settings.secret_for("order")


def test_fleet_db_secrets_comes_from_the_environment_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEET_DB_SECRETS", '{"payment": "p/1", "ops": "o 2"}')
    settings = Settings()
    assert settings.database_url("payment") == (
        "postgresql://fleet_payment:p%2F1@127.0.0.1:5432/fleet_payment"
    )
    assert settings.database_url("ops") == "postgresql://fleet_ops:o%202@127.0.0.1:5432/fleet_ops"


def test_a_url_without_password_takes_the_role_s_given_secret() -> None:
    settings = Settings(
        db_urls={
            "payment": "postgresql://pay@pg-payment:5432/payments",
            "shipping": "postgresql://pg-shipping/fleet_shipping",
            "order": "postgresql://o:own@pg-order/fleet_order",
            "ops": "postgresql://o:@pg-ops/fleet_ops",
        },
        db_secrets={"payment": "p", "shipping": "s", "order": "ignored", "ops": "o/p"},
    )
    assert settings.database_url("ops") == "postgresql://o:o%2Fp@pg-ops/fleet_ops"
    assert settings.database_url("payment") == "postgresql://pay:p@pg-payment:5432/payments"
    assert (
        settings.database_url("shipping")
        == "postgresql://fleet_shipping:s@pg-shipping/fleet_shipping"
    )
    assert settings.database_url("order") == "postgresql://o:own@pg-order/fleet_order"


def test_a_process_reads_its_own_role_s_secret_alone(
    monkeypatch: pytest.MonkeyPatch, path: Path
) -> None:
    keep(path, {f"staging_{key}": f"secret-of-{key}" for key in namespace.role_keys()})
    read: list[str] = []
    original = role_secrets.read

    def recorded(file: Path, role: str) -> str:
        read.append(role)
        return original(file, role)

    monkeypatch.setattr(role_secrets, "read", recorded)
    settings = Settings(namespace="staging", secrets_file=path)

    url = settings.database_url("payment")  # a payment worker
    assert read == ["staging_payment"]
    assert "secret-of-payment" in url
    read.clear()
    url = settings.reader_url("order_view")  # the HTTP API: the reader, not the view's role
    assert read == ["staging_order_view_reader"]
    assert url == (
        "postgresql://staging_order_view_reader:secret-of-order_view_reader"
        "@127.0.0.1:5432/staging_order_view"
    )
    read.clear()
    assert "secret-of-ops" in settings.database_url("ops")  # the operations role
    assert read == ["staging_ops"]


def test_no_secret_is_shown_by_the_settings(path: Path) -> None:
    settings = Settings(
        db_secrets={"payment": "Zq7-hidden"},
        db_urls={"order": "postgresql://o:Zq7-in-url@h/d"},
        secrets_file=path,
    )
    assert "Zq7" not in repr(settings) and "Zq7" not in str(settings)


def test_fleet_db_password_is_refused_not_silently_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEET_DB_PASSWORD", "shared-by-everyone")
    with pytest.raises(ValidationError, match="FLEET_DB_PASSWORD is no longer read"):
        Settings()
    done = fleet("history")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("fleet: invalid setting db_password: Value error, FLEET_DB_PASSWORD")
    assert "shared-by-everyone" not in line


# --- The secrets file --------------------------------------------------------------------


def test_secrets_are_generated_once_and_kept_private(path: Path) -> None:
    roles = ["staging_payment", "staging_ops"]
    assert role_secrets.ensure(path, roles) == roles
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    kept = json.loads(path.read_text())
    assert set(kept) == set(roles)
    assert all(len(secret) >= 43 for secret in kept.values())  # 32 random bytes, URL-safe
    assert len(set(kept.values())) == len(roles)

    # Again: nothing generated, nothing changed; a new role gets one, the others keep theirs.
    assert role_secrets.ensure(path, roles) == []
    assert json.loads(path.read_text()) == kept
    assert role_secrets.ensure(path, [*roles, "staging_order"]) == ["staging_order"]
    again = json.loads(path.read_text())
    assert {role: again[role] for role in roles} == kept
    assert role_secrets.read(path, "staging_ops") == kept["staging_ops"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_the_file_is_private_from_its_creation_whatever_the_umask(path: Path) -> None:
    previous = os.umask(0)
    try:
        role_secrets.ensure(path, ["staging_payment"])
        assert mode(path) == 0o600 and mode(path.parent) == 0o700
        role_secrets.ensure(path, ["staging_order"])  # rewritten: still 0600
        assert mode(path) == 0o600
    finally:
        os.umask(previous)


def test_two_runs_at_once_give_each_role_one_secret(path: Path) -> None:
    roles = [f"staging_role{n}" for n in range(5)]
    generated: list[list[str]] = []
    start = threading.Barrier(8)

    def run() -> None:
        start.wait()
        generated.append(role_secrets.ensure(path, roles))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(generated, key=len) == [[]] * 7 + [roles]  # one run generated them all


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_a_file_open_to_group_or_others_is_refused(path: Path, loose: int) -> None:
    keep(path, {"staging_payment": "leaked?"}, loose)
    settings = Settings(namespace="staging", secrets_file=path)
    for attempt in (
        lambda: settings.secret_for("payment"),
        lambda: role_secrets.ensure(path, ["staging_ops"]),
        lambda: namespace.keep_secrets(settings),
    ):
        with pytest.raises(role_secrets.InsecureSecretsFile) as refused:
            attempt()
        message = str(refused.value)
        assert f"{path} is open to group or others (mode 0{loose:o})" in message
        assert "\n" not in message and "leaked?" not in message
    assert mode(path) == loose  # left as it was, for the operator to look at


def test_a_file_that_is_not_a_json_object_of_secrets_is_refused_without_showing_it(
    path: Path,
) -> None:
    for content in ('["Zq7-secret"]', "Zq7-secret", '{"staging_payment": 7}'):
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_text(content)
        path.chmod(0o600)
        with pytest.raises(role_secrets.InsecureSecretsFile, match="not a JSON object") as e:
            role_secrets.read(path, "staging_payment")
        assert "Zq7" not in str(e.value)


def test_forgetting_removes_the_roles_secrets_and_the_file_once_empty(path: Path) -> None:
    keep(path, {"staging_payment": "a", "staging_ops": "b", "other_ops": "c"})
    assert role_secrets.forget(path, ["staging_payment", "staging_ops", "staging_x"]) == [
        "staging_payment",
        "staging_ops",
    ]
    assert json.loads(path.read_text()) == {"other_ops": "c"} and mode(path) == 0o600
    assert role_secrets.forget(path, ["other_ops"]) == ["other_ops"]
    assert not path.exists()
    assert role_secrets.forget(path, ["other_ops"]) == []


def test_one_secret_for_two_roles_or_an_empty_one_is_refused() -> None:
    role_secrets.check_distinct({"a": "1", "b": "2"})
    with pytest.raises(role_secrets.SharedSecret, match="roles a and c were given the same"):
        role_secrets.check_distinct({"a": "same", "b": "2", "c": "same"})
    with pytest.raises(role_secrets.SharedSecret, match="role b was given an empty secret"):
        role_secrets.check_distinct({"a": "1", "b": ""})


# --- What fleet db init takes ------------------------------------------------------------


def test_db_init_generates_a_secret_for_every_role_not_given_one(path: Path) -> None:
    settings = Settings(
        namespace="staging",
        secrets_file=path,
        db_secrets={"payment": "given-payment"},
        db_urls={"order": "postgresql://staging_order:given-order@db/staging_order"},
    )
    generated = namespace.keep_secrets(settings)
    every = [settings.database_name(key) for key in namespace.role_keys()]
    assert set(generated) == set(every) - {"staging_payment", "staging_order"}
    assert {"staging_ops", "staging_order_view_reader"} <= set(generated)
    assert set(json.loads(path.read_text())) == set(generated)  # the given ones are not copied
    assert namespace.keep_secrets(settings) == []  # idempotent

    databases = namespace.service_databases(settings)
    passwords = {role: db.password(role) for db in databases for role in (db.name, *db.readers)}
    assert set(passwords) == set(every)
    assert len(set(passwords.values())) == len(every)  # no two roles share one
    assert passwords["staging_payment"] == "given-payment"
    assert passwords["staging_order"] == "given-order"
    assert not any(secret in repr(databases) for secret in passwords.values())


def test_db_init_refuses_one_secret_for_two_roles(path: Path) -> None:
    settings = Settings(
        namespace="staging",
        secrets_file=path,
        db_secrets={"payment": "fleet"},
        db_urls={"order": "postgresql://staging_order:fleet@db/staging_order"},
    )
    with pytest.raises(
        role_secrets.SharedSecret, match="roles staging_order and staging_payment were given"
    ):
        namespace.keep_secrets(settings)


def test_db_init_refuses_a_secret_for_a_role_that_does_not_exist(path: Path) -> None:
    settings = Settings(secrets_file=path, db_secrets={"paymnet": "x"})
    with pytest.raises(role_secrets.SecretsError, match="names no role of the fleet: paymnet"):
        namespace.keep_secrets(settings)
    assert not path.exists()


def test_teardown_finds_the_databases_and_roles_without_reading_a_secret(path: Path) -> None:
    keep(path, {}, 0o644)  # would be refused if it were read
    settings = Settings(namespace="staging", secrets_file=path)
    roles = namespace.database_roles(settings)
    assert [database.name for database in roles][-1] == "staging_ops"


# --- The CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["db", "init"], ["worker", "inventory"], ["history"]])
def test_the_cli_refuses_an_open_secrets_file_in_one_line_with_exit_2(
    path: Path, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keep(path, {"fleet_inventory": "x", "fleet_ops": "y"}, 0o644)
    monkeypatch.setenv("FLEET_SECRETS_FILE", str(path))
    # Nothing listens here: the secret is looked for before any server is reached.
    monkeypatch.setenv("FLEET_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    monkeypatch.setenv("FLEET_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    done = fleet(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"fleet: secrets file {path} is open to group or others (mode 0644): refused;"
        f" 'chmod 600 {path}' if nobody else read it, else give every role a new secret"
    ]


def test_the_cli_says_which_role_has_no_secret(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_SECRETS_FILE", str(path))
    done = fleet("worker", "payment")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"fleet: no secret for role fleet_payment: {path} does not exist")


# --- The password PostgreSQL stores -------------------------------------------------------


def test_the_scram_verifier_is_the_one_of_rfc_7677() -> None:
    """RFC 7677's exchange (password "pencil"): the stored and server keys made here verify
    its client proof and produce its server signature."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_verifier("pencil", salt)
    method, _, rest = verifier.partition("$")
    iterations_and_salt, _, keys = rest.partition("$")
    assert method == "SCRAM-SHA-256"
    assert iterations_and_salt == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    stored_key, server_key = (base64.b64decode(key) for key in keys.split(":"))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        f"c=biws,r={nonce}"
    ).encode()
    client_proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.digest(stored_key, auth_message, "sha256")
    client_key = bytes(a ^ b for a, b in zip(client_proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode() == (
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    )
    assert scram_verifier("pencil") != scram_verifier("pencil")  # a new salt each time


def test_without_a_home_the_secrets_file_must_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    settings = Settings()
    with pytest.raises(role_secrets.SecretsError, match="set FLEET_SECRETS_FILE"):
        settings.secret_for("payment")
    assert Settings(secrets_file=Path("/run/s.json")).secrets_path == Path("/run/s.json")
