"""``gatepass key export --format ppk``: your key and a grant's certificate in one file for PuTTY, plink, psftp."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from cli.client_connect import fetch_usable_grants, prepare_files
from cli.context import Context
from cli.errors import LocalSetupError, NoUsableGrant, UsageError
from cli.putty_key import ED25519_CERT_TYPE, ed25519_private_blob, fingerprint, ppk_v3
from cli.sshargs import UsableGrant, choose_grant, config_value, format_time, pick_per_asset
from cli.state import write_private_file

# PuTTY reads certificates from 0.78 on (its earlier releases would offer the bare key and be refused).
PUTTY_WITH_CERTIFICATES = "0.78"
# How every PuTTY key file begins (any version): what an earlier export found at the same path starts with.
PPK_MAGIC = b"PuTTY-User-Key-File-"


def run_key_export(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    if args.out is not None and args.asset is None:
        raise UsageError("--out names one file: give the asset too (--asset ASSET)")
    passphrase = _read_passphrase(args.passphrase_file) if args.passphrase_file else None
    grants, username, _ = fetch_usable_grants(ctx, asset=args.asset)
    now = ctx.clock()
    if args.asset is not None:
        chosen = [choose_grant(grants, asset=args.asset, now=now)]
    else:
        chosen = pick_per_asset([g for g in grants if g.ssh and g.certificate], now=now)
        if not chosen:
            raise NoUsableGrant("you have no grant with SSH to export a key for: request access with "
                                "`gatepass request ASSET --for 1h --reason …`, and export after its approval")
    files = prepare_files(ctx, chosen)  # checks each certificate was issued for this key; pins the gateways
    seed = _private_seed(files[chosen[0].id].key)
    targets = [(grant, args.out if args.out is not None else ctx.state.home / "putty" / f"{grant.asset}.ppk")
               for grant in chosen]
    for _, target in targets:  # every file checked before any is written: a refusal leaves nothing half done
        _check_replaceable(target)
    exported = []
    for grant, target in targets:
        text = ppk_v3(key_type=ED25519_CERT_TYPE, public_blob=_certificate_blob(grant),
                      private_blob=ed25519_private_blob(seed), passphrase=passphrase,
                      comment=f"gatepass {username} {grant.asset} grant {grant.id} until {format_time(grant.ends_at)}")
        try:
            write_private_file(target, text)
        except OSError as exc:
            raise LocalSetupError(f"cannot write {target}: {exc.strerror}") from exc
        exported.append((grant, target))
    if args.json:
        ctx.say(json.dumps([_record(grant, path, encrypted=passphrase is not None) for grant, path in exported],
                           indent=2))
        return 0
    for grant, path in exported:
        _explain(ctx, grant, path, encrypted=passphrase is not None)
    return 0


def _check_replaceable(target: Path) -> None:
    """``target`` is new or an earlier export: --out is typed by hand, and a slip (~/.ssh/id_ed25519) must not
    replace the engineer's own key or any other file without a word."""
    if target.is_dir():
        raise UsageError(f"{target} is a folder: give the key file's own name, e.g. {target / 'hmi-01.ppk'}")
    try:
        with target.open("rb") as existing:
            start = existing.read(len(PPK_MAGIC))
    except FileNotFoundError:
        return
    except OSError:
        start = b""
    if start != PPK_MAGIC:
        raise UsageError(f"{target} exists and is not a PuTTY key file: key export replaces only a file it wrote "
                         "before; give another --out, or move that file away first")


def _explain(ctx: Context, grant: UsableGrant, path: Path, *, encrypted: bool) -> None:
    gateway = grant.gateway
    host_fingerprint = fingerprint(gateway.host_key)
    ctx.say(f"{grant.asset}: {path}")
    ctx.note(
        f"  PuTTY, plink or psftp {PUTTY_WITH_CERTIFICATES} or later: host {gateway.host}, port {gateway.port}, "
        f"user name {grant.asset}, private key file {path}{' (protected by your passphrase)' if encrypted else ''}"
    )
    ctx.note(f"  The gateway's host key is {gateway.host_key.split()[0]} {host_fingerprint}: accept no other.")
    ctx.note(f"  plink -ssh -batch -P {gateway.port} -i {config_value(path)} -hostkey {host_fingerprint} "
             f"{grant.asset}@{gateway.host}")
    ctx.note(f"  The certificate inside ends with grant {grant.id} at {format_time(grant.ends_at)}: export again "
             "after your next approval.")


def _record(grant: UsableGrant, path: Path, *, encrypted: bool) -> dict[str, object]:
    return {
        "asset": grant.asset, "grant": grant.id, "file": str(path), "format": "ppk", "encrypted": encrypted,
        "user": grant.asset, "starts_at": grant.starts_at.isoformat(), "ends_at": grant.ends_at.isoformat(),
        "gateway": {"host": grant.gateway.host, "port": grant.gateway.port, "host_key": grant.gateway.host_key,
                    "fingerprint": fingerprint(grant.gateway.host_key)},
    }


def _certificate_blob(grant: UsableGrant) -> bytes:
    import base64
    import binascii

    parts = (grant.certificate or "").split()
    try:
        if len(parts) < 2 or parts[0] != ED25519_CERT_TYPE:
            raise ValueError
        return base64.b64decode(parts[1], validate=True)
    except (ValueError, binascii.Error):
        raise NoUsableGrant(f"the broker sent grant {grant.id} a certificate this command cannot read: "
                            f"use `gatepass ssh {grant.asset}`, or ask the plant's admin") from None


def _private_seed(key_path: Path) -> bytes:
    """The 32-byte Ed25519 seed of the key the certificates were issued for (an OpenSSH private key file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise LocalSetupError(f"cannot read your SSH key {key_path}: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        # TypeError: the file is protected by a passphrase (gatepass writes it without one).
        raise LocalSetupError(f"{key_path} is not an unprotected OpenSSH private key ({exc}): "
                              "request access again from this machine to get a key gatepass can read") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LocalSetupError(f"{key_path} is not an Ed25519 key: request access again from this machine")
    return key.private_bytes_raw()


def _read_passphrase(path: Path) -> bytes:
    try:
        # utf-8-sig: a byte order mark (Notepad writes one) is no part of what the engineer types into PuTTY.
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read the passphrase file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise UsageError(f"the passphrase file {path} is not UTF-8 text") from None
    first = re.split(r"[\r\n]", text, maxsplit=1)[0]  # up to the first CR or LF, as puttygen reads such a file
    if not first:
        raise UsageError(f"the passphrase file {path} is empty: write the passphrase on its first line")
    if not all(" " <= ch <= "~" for ch in first):
        # PuTTY on Windows may take what is typed into its passphrase box in the system's code page, not UTF-8: an
        # accented letter would then never open the file. A tab moves the focus out of the box instead.
        raise UsageError(f"the passphrase in {path} holds characters other than ASCII letters, digits, spaces and "
                         "punctuation: PuTTY on Windows may read those differently when you type them, and the key "
                         "would not open; choose one without them")
    return first.encode("ascii")
