"""`gatepass init`: create the data directory, master key, database, certificate authority, first admin
and the embedded gateway's credential."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, inspect, select

from broker.audit import trail
from broker.audit.trail import Action
from broker.db import make_engine, make_session_factory, unit_of_work
from broker.errors import Conflict
from broker.identity.identities import NewCredentials, create_identity
from broker.inventory import gateways
from broker.keys import authorities
from broker.keys.vault import Vault
from broker.models import Authority
from broker.settings import Settings
from broker.vocabulary import Role

ADMIN_USERNAME = "admin"
EMBEDDED_GATEWAY = "embedded"


@dataclass(frozen=True)
class InitResult:
    admin: NewCredentials
    gateway_token_path: Path


def initialise(settings: Settings, *, create_schema: Callable[[Engine], None]) -> InitResult:
    """``create_schema`` brings the empty database to the newest schema (assembly.database.upgrade: the broker
    does not import migrations, which import it)."""
    data = settings.data_dir
    if settings.master_key_path.exists():
        raise Conflict(f"{data} is already initialised (it has a master key); use another --data directory")
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)  # CA keys, the master key and the database are the operator's alone
    engine = make_engine(settings.effective_database_url)
    try:
        if "authorities" in inspect(engine).get_table_names():
            with engine.connect() as connection:
                if connection.execute(select(Authority.name)).first() is not None:
                    raise Conflict("the database already holds a Gatepass installation; use a fresh database")
        create_schema(engine)
        vault = Vault.generate()
        now = settings.clock.now()
        with unit_of_work(make_session_factory(engine)) as session:
            trail.record(session, now=now, action=Action.SYSTEM_INITIALISED, actor="gatepass-init",
                         details={"data_dir": str(data)})
            authorities.create_authority(session, vault=vault, now=now)
            admin = create_identity(session, vault=vault, now=now, actor="gatepass-init",
                                    username=ADMIN_USERNAME, role=Role.ADMIN,
                                    enrolment_code_ttl=settings.enrolment_code_ttl)
            token = gateways.create_gateway(session, now=now, actor="gatepass-init", name=EMBEDDED_GATEWAY)
    finally:
        engine.dispose()
    # Written only once the database holds what it seals, so a failed init can simply be run again.
    vault.write_key_file(settings.master_key_path)
    write_secret_file(settings.gateway_token_path, token)
    if admin is None:  # a human admin always gets credentials; this guards the type, not a real case
        raise RuntimeError("the first admin was created without credentials")
    return InitResult(admin=admin, gateway_token_path=settings.gateway_token_path)


def write_secret_file(path: Path, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
