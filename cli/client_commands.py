"""The client subcommands' command lines (login … ssh-config, audit export): their arguments, help and checks.

Each names its handler in a client_* module with ``Later``, so that module, and what it needs (httpx, the SSH key
and certificate handling), is imported only when that command runs: `gatepass --version`, `--help` and a usage
error never import it (tests/cli/test_startup.py).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.errors import UsageError
from cli.lazy import Later

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

AUDIT_FORMATS = ("jsonl", "cef", "syslog", "ocsf")
# Request and grant ids as the broker makes them; also what a grant's id must be before the client writes it into an ssh
# config (cli/sshargs.py).
OBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

# Checks that live with what they check (cli.state, cli.durations, ...): imported when their argument is given.
check_asset_name = Later("cli.state", "check_asset_name")
parse_duration = Later("cli.durations", "parse_duration")
parse_start = Later("cli.durations", "parse_start")
parse_command = Later("cli.client_delegate", "parse_command")
check_since = Later("cli.client_audit", "check_since")


def _argument(parse: Any) -> Any:
    """Adapt a parser raising ``UsageError`` to argparse's ``type=`` (which reports ``ArgumentTypeError``)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    convert.__name__ = parse.__name__
    return convert


def parse_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"'{text}' is not a TCP port: write a number from 1 to 65535")
    return int(text)


def object_id(text: str) -> str:
    if not OBJECT_ID.match(text):
        raise UsageError(f"'{text}' is not an identifier like req-1a2b3c4d or grt-1a2b3c4d")
    return text


def add_subcommands(subparsers: Subparsers) -> None:
    """Register the client subcommands, in the order `gatepass --help` lists them after the server-side ones."""
    _session(subparsers)
    _join(subparsers)
    _access(subparsers)
    _extensions(subparsers)
    _delegate(subparsers)
    _reviews(subparsers)
    _playbooks(subparsers)
    _posture(subparsers)
    _flags(subparsers)
    _watch(subparsers)
    _connect(subparsers)
    _keys(subparsers)


def add_audit_export(audit_subparsers: Subparsers) -> None:
    """audit export: cli.client_audit (``audit verify`` and ``forward`` are cli.audit_commands)."""
    export = audit_subparsers.add_parser(
        "export",
        help="write audit events for a SIEM (security and admin roles)",
        description="Print the audit trail from the broker, oldest first, one event per line.",
    )
    export.add_argument("--format", choices=AUDIT_FORMATS, default="jsonl", help="output format (default: jsonl)")
    export.add_argument(
        "--since",
        metavar="T",
        type=_argument(check_since),
        help="ISO 8601 time (no offset means UTC) or a duration back from now, like 1d",
    )
    export.set_defaults(func=Later("cli.client_audit", "run_export"))


def _session(subparsers: Subparsers) -> None:
    """login, logout, whoami: cli.client_session."""
    login = subparsers.add_parser(
        "login",
        help="sign in to the broker and keep the session in the state directory",
        description="Sign in with password and one-time code; what no option gives is prompted for.",
    )
    login.add_argument(
        "--server", metavar="URL", help="broker URL (default: $GATEPASS_SERVER or http://127.0.0.1:8080)"
    )
    login.add_argument("--user", metavar="NAME", help="your username")
    login.add_argument(
        "--password-file", metavar="F", help="read the password from this file ('-' for stdin)"
    )
    login.add_argument("--totp", metavar="CODE", help="the current one-time code from your authenticator")
    login.add_argument(
        "--enrolment-code", metavar="CODE",
        help="the enrolment code you were given with your password: needed at the first sign-in and after your "
             "one-time codes were reset, ignored otherwise",
    )
    login.add_argument("--json", action="store_true", help="print the session (never the token) as JSON")
    login.add_argument(
        "--oidc", action="store_true",
        help="plant staff: sign in with your company account in your browser (the broker's identity provider) "
             "instead of a password and one-time code",
    )
    login.add_argument("--no-browser", action="store_true",
                       help="with --oidc: only print the sign-in address, do not open a browser")
    login.set_defaults(func=Later("cli.client_session", "run_login"))

    logout = subparsers.add_parser("logout", help="revoke the session token and forget it")
    logout.set_defaults(func=Later("cli.client_session", "run_logout"))

    whoami = subparsers.add_parser("whoami", help="show who the saved session signs in as")
    whoami.add_argument("--json", action="store_true", help="print the Identity object from the API")
    whoami.set_defaults(func=Later("cli.client_session", "run_whoami"))


def _join(subparsers: Subparsers) -> None:
    """join, renew: cli.client_join."""
    join = subparsers.add_parser(
        "join",
        help="join this machine as a service or AI identity, with a key made here",
        description="Make an Ed25519 key in the state directory (the private key never leaves it), prove it to "
        "the broker with the join token an admin gave you, and keep the short-lived credential it issues; "
        "every gatepass command renews it at half-life.",
    )
    join.add_argument(
        "--server", metavar="URL", help="broker URL (default: $GATEPASS_SERVER or http://127.0.0.1:8080)"
    )
    join.add_argument(
        "--token", metavar="T", required=True,
        help="the join token from `gatepass admin identity join-token NAME` ('-' reads it from stdin)",
    )
    join.add_argument("--json", action="store_true", help="print the instance and the credential's end as JSON")
    join.set_defaults(func=Later("cli.client_join", "run_join"))

    renew = subparsers.add_parser(
        "renew",
        help="renew this machine's workload credential now (done at half-life by every command anyway)",
    )
    renew.add_argument("--json", action="store_true", help="print the instance and the credential's end as JSON")
    renew.set_defaults(func=Later("cli.client_join", "run_renew"))


def _access(subparsers: Subparsers) -> None:
    """request, requests, approve, deny, cancel, revoke: cli.client_access."""
    request = subparsers.add_parser(
        "request",
        help="ask the plant for time-bound access to one asset",
        description="Ask for access to ASSET. SSH when neither --ssh nor --port is given; "
        "without --start the window begins at approval.",
    )
    request.add_argument("asset", metavar="ASSET", type=_argument(check_asset_name))
    request.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        required=True,
        type=_argument(parse_duration),
        help="how long: 30s, 10m, 2h or 1d",
    )
    request.add_argument("--reason", required=True, metavar="TEXT", help="what the work is, for the approvers")
    request.add_argument("--ssh", action="store_true", help="SSH shell/exec/sftp (the default without --port)")
    request.add_argument(
        "--port",
        dest="ports",
        metavar="N",
        type=_argument(parse_port),
        nargs="+",
        action="extend",
        default=[],
        help="TCP port(s) to forward, e.g. --port 502 4840",
    )
    request.add_argument(
        "--read-only",
        action="store_true",
        help="protocol-aware read-only access to the ports (Modbus/TCP: reads pass, writes are refused)",
    )
    request.add_argument(
        "--start",
        metavar="T",
        type=_argument(parse_start),
        help="window start, ISO 8601 (e.g. 2026-11-27T14:00:00+01:00; no offset means UTC)",
    )
    request.add_argument("--wait", action="store_true", help="wait until the request is decided; exit 0 if approved")
    request.add_argument("--json", action="store_true", help="print the Request object from the API")
    request.set_defaults(func=Later("cli.client_access", "run_request"))

    listing = subparsers.add_parser("requests", help="list the requests you may see")
    listing.add_argument("--pending", action="store_true", help="only those waiting for a decision")
    listing.add_argument("--json", action="store_true", help="print a JSON list of Request objects")
    listing.set_defaults(func=Later("cli.client_access", "run_requests"))

    approve = subparsers.add_parser("approve", help="approve a pending request for your site")
    approve.add_argument("request_id", metavar="REQUEST_ID", type=_argument(object_id))
    approve.add_argument("--comment", metavar="TEXT")
    approve.add_argument(
        "--shorten-to",
        metavar="DURATION",
        type=_argument(parse_duration),
        help="grant less time than asked for (30s, 10m, 2h, 1d)",
    )
    approve.add_argument("--json", action="store_true", help="print the Request object from the API")
    approve.set_defaults(func=Later("cli.client_access", "run_approve"))

    deny = subparsers.add_parser("deny", help="deny a pending request for your site (a comment is required)")
    deny.add_argument("request_id", metavar="REQUEST_ID", type=_argument(object_id))
    deny.add_argument("--comment", metavar="TEXT", required=True, help="why, for the requester")
    deny.add_argument("--json", action="store_true", help="print the Request object from the API")
    deny.set_defaults(func=Later("cli.client_access", "run_deny"))

    cancel = subparsers.add_parser("cancel", help="withdraw your own pending request")
    cancel.add_argument("request_id", metavar="REQUEST_ID", type=_argument(object_id))
    cancel.add_argument("--json", action="store_true", help="print the Request object from the API")
    cancel.set_defaults(func=Later("cli.client_access", "run_cancel"))

    revoke = subparsers.add_parser("revoke", help="end a grant now; its live sessions are cut")
    revoke.add_argument("grant_id", metavar="GRANT_ID", type=_argument(object_id))
    revoke.add_argument("--reason", metavar="TEXT", help="recorded in the audit trail")
    revoke.add_argument("--json", action="store_true", help="print the Grant object from the API")
    revoke.set_defaults(func=Later("cli.client_access", "run_revoke"))


def _extensions(subparsers: Subparsers) -> None:
    """extend, extensions, approve-extension, deny-extension: cli.client_extensions."""
    extend = subparsers.add_parser(
        "extend",
        help="ask the plant for more time on an active grant",
        description="Ask to extend GRANT_ID; once approved, live sessions keep running until the new end.",
    )
    extend.add_argument("grant_id", metavar="GRANT_ID", type=_argument(object_id))
    extend.add_argument("--for", dest="duration", metavar="DURATION", required=True, type=_argument(parse_duration),
                        help="how much longer: 30s, 10m, 2h or 1d")
    extend.add_argument("--reason", required=True, metavar="TEXT", help="why more time is needed, for the approvers")
    extend.add_argument("--json", action="store_true", help="print the Extension object from the API")
    extend.set_defaults(func=Later("cli.client_extensions", "run_extend"))

    listing = subparsers.add_parser("extensions", help="list the grant extensions you may see")
    listing.add_argument("--pending", action="store_true", help="only those waiting for a decision")
    listing.add_argument("--json", action="store_true", help="print a JSON list of Extension objects")
    listing.set_defaults(func=Later("cli.client_extensions", "run_extensions"))

    approve = subparsers.add_parser("approve-extension", help="approve a pending extension for your site")
    approve.add_argument("extension_id", metavar="EXTENSION_ID", type=_argument(object_id))
    approve.add_argument("--comment", metavar="TEXT")
    approve.add_argument("--json", action="store_true", help="print the Extension object from the API")
    approve.set_defaults(func=Later("cli.client_extensions", "run_approve_extension"))

    deny = subparsers.add_parser("deny-extension", help="deny a pending extension (a comment is required)")
    deny.add_argument("extension_id", metavar="EXTENSION_ID", type=_argument(object_id))
    deny.add_argument("--comment", metavar="TEXT", required=True, help="why, for the requester")
    deny.add_argument("--json", action="store_true", help="print the Extension object from the API")
    deny.set_defaults(func=Later("cli.client_extensions", "run_deny_extension"))


def _delegate(subparsers: Subparsers) -> None:
    """delegate: cli.client_delegate."""
    delegate = subparsers.add_parser(
        "delegate",
        help="give your AI agent a narrower part of one of your live grants",
        description="Delegate part of GRANT_ID to AGENT (an AI agent you sponsor): the same asset, the same or "
        "fewer services, a window that ends no later than yours. It is read-only by default (Modbus reads, SFTP "
        "downloads) and may exec only the --command lines given, word for word; it ends when your grant ends or "
        "is revoked. Without --ssh or --port: SSH if your grant has it, else its ports.",
    )
    delegate.add_argument("grant_id", metavar="GRANT_ID", type=_argument(object_id))
    delegate.add_argument("--to", dest="agent", required=True, metavar="AGENT", help="the AI agent's identity")
    delegate.add_argument("--for", dest="duration", metavar="DURATION", required=True,
                          type=_argument(parse_duration), help="how long: 30s, 10m, 2h (at most what your grant has "
                          "left)")
    delegate.add_argument("--ssh", action="store_true", help="delegate SSH (commands, SFTP downloads)")
    delegate.add_argument("--port", "--ports", dest="ports", metavar="N", type=_argument(parse_port), nargs="+",
                          action="extend", default=None, help="TCP port(s) of your grant to delegate")
    delegate.add_argument("--command", dest="commands", metavar="ARGV", type=_argument(parse_command),
                          action="append", default=[],
                          help="a command the agent may run, matched exactly on its words (repeat for several), "
                          "e.g. --command 'systemctl status plc-bridge'")
    delegate.add_argument("--read-only", action="store_true",
                          help="read-only (the default): Modbus reads only, SFTP downloads only")
    delegate.add_argument("--allow-writes", action="store_true",
                          help="let the agent write (Modbus writes, uploads); only where the site's policy allows "
                          "AI agents to write")
    delegate.add_argument("--key", metavar="FILE", type=Path,
                          help="the agent's public key (.pub) when it has not joined with `gatepass join` yet; "
                          "the certificate is then in the --json answer, to hand to the agent")
    delegate.add_argument("--reason", metavar="TEXT", help="what the agent is to do (recorded with the grant)")
    delegate.add_argument("--json", action="store_true", help="print the delegated Grant object from the API")
    delegate.set_defaults(func=Later("cli.client_delegate", "run_delegate"))


def _reviews(subparsers: Subparsers) -> None:
    """reviews, attest: cli.client_reviews."""
    reviews = subparsers.add_parser(
        "reviews", help="the access reviews you owe (identities you own, sponsor or whose sites you supervise)",
        description="Lists the identities due for review within 14 days or overdue, with what each did since its "
                    "last review.")
    reviews.add_argument("--all", action="store_true", help="every identity you may review, not only those due")
    reviews.add_argument("--json", action="store_true", help="print a JSON list of Review objects")
    reviews.set_defaults(func=Later("cli.client_reviews", "run_reviews"))

    attest = subparsers.add_parser("attest", help="keep or revoke an identity after reviewing it")
    attest.add_argument("name", metavar="NAME")
    decision = attest.add_mutually_exclusive_group(required=True)
    decision.add_argument("--keep", action="store_const", const="keep", dest="outcome",
                          help="it still needs its access: the next review is due one period from now")
    decision.add_argument("--revoke", action="store_const", const="revoke", dest="outcome",
                          help="it does not: it is suspended, its grants end and its sessions are cut")
    attest.add_argument("--comment", required=True, metavar="TEXT", help="what you checked, for the record")
    attest.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    attest.set_defaults(func=Later("cli.client_reviews", "run_attest"))


def _playbooks(subparsers: Subparsers) -> None:
    """playbook list|edit|run|drill|runs: cli.client_playbooks."""
    playbook = subparsers.add_parser("playbook", help="containment playbooks: list, run, rehearse")
    verbs = playbook.add_subparsers(dest="playbook_verb", metavar="VERB", required=True)

    listing = verbs.add_parser("list", help="the playbooks and their steps")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=Later("cli.client_playbooks", "run_list"))

    for verb, text in (("run", "run a playbook now (every step audited under the run's id)"),
                       ("drill", "rehearse a playbook: plan it against the live state without changing anything")):
        command = verbs.add_parser(verb, help=text)
        command.add_argument("name", metavar="NAME")
        command.add_argument("--site", help="the site it acts on")
        command.add_argument("--identity", help="the identity it acts on")
        command.add_argument("--reason", required=True, help="why: the people cut off and the trail read it")
        command.add_argument("--json", action="store_true", help="print the run report as JSON")
        if verb == "drill":
            command.add_argument("--execute-on-drill-site", action="store_true",
                                 help="really run it, timed, on a site marked as a drill site")
        command.set_defaults(func=Later("cli.client_playbooks", "run_playbook"), verb_name=verb)

    edit = verbs.add_parser("edit", help="give a playbook new steps: a new version (security, admins)")
    edit.add_argument("name", metavar="NAME")
    edit.add_argument("--steps", required=True, metavar="STEP,STEP,…",
                      help="the steps in order (`gatepass playbook list --json` names them)")
    edit.add_argument("--description", help="when to run it (required for a new playbook)")
    edit.add_argument("--json", action="store_true", help="print the new version as JSON")
    edit.set_defaults(func=Later("cli.client_playbooks", "run_edit"))

    runs = verbs.add_parser("runs", help="past runs and drills with their time to contain (security, admins)")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=Later("cli.client_playbooks", "run_runs"))


def _posture(subparsers: Subparsers) -> None:
    """posture: cli.client_playbooks."""
    posture = subparsers.add_parser("posture", help="the posture report: this period beside the previous one "
                                                    "(security, admins)")
    posture.add_argument("--days", type=int, default=30, help="the period, in days (default 30)")
    posture.add_argument("--json", action="store_true")
    posture.set_defaults(func=Later("cli.client_playbooks", "run_posture"))


def _flags(subparsers: Subparsers) -> None:
    """flags, flag: cli.client_flags."""
    listing = subparsers.add_parser("flags", help="open flags: who behaved unlike themselves, and why")
    listing.add_argument("--status", choices=["open", "benign", "confirmed", "all"], default="open")
    listing.add_argument("--json", action="store_true", help="print a JSON list of Flag objects")
    listing.set_defaults(func=Later("cli.client_flags", "run_flags"))

    decide = subparsers.add_parser("flag", help="decide a flag: benign (feeds the baseline) or confirmed")
    decide.add_argument("verdict", choices=["benign", "confirmed"])
    decide.add_argument("flag_id", metavar="FLAG_ID")
    decide.add_argument("--comment", required=True, metavar="TEXT", help="why, kept with the flag")
    decide.add_argument("--json", action="store_true")
    decide.set_defaults(func=Later("cli.client_flags", "run_decide"))


def _watch(subparsers: Subparsers) -> None:
    """watch: cli.client_watch."""
    watch = subparsers.add_parser("watch", help="follow a live session in this terminal, read-only (supervisors of "
                                  "its site, security reviewers); the vendor is told who watches")
    watch.add_argument("session_id", metavar="SESSION_ID", type=object_id)
    watch.set_defaults(func=Later("cli.client_watch", "run_watch"))


def _connect(subparsers: Subparsers) -> None:
    """ssh, tunnel, ssh-config: cli.client_connect."""
    ssh = subparsers.add_parser(
        "ssh",
        help="connect to an asset with stock ssh and your grant certificate",
        description="Run ssh to ASSET through its gateway; anything after -- is the remote command.",
    )
    ssh.add_argument("asset", metavar="ASSET", type=_argument(check_asset_name))
    ssh.add_argument(
        "command", metavar="COMMAND", nargs=argparse.REMAINDER, help="after --: the remote command"
    )
    ssh.set_defaults(func=Later("cli.client_connect", "run_ssh"))

    tunnel = subparsers.add_parser(
        "tunnel",
        help="forward a granted TCP port of an asset to this machine",
        description="Forward 127.0.0.1:LOCAL to ASSET:REMOTE through the gateway until Ctrl-C or the grant "
        "ends; reconnects after a network drop while the grant lasts. Exit status 0 when stopped or when "
        "the grant ended on time, 1 when it was revoked.",
    )
    tunnel.add_argument("asset", metavar="ASSET", type=_argument(check_asset_name))
    tunnel.add_argument(
        "--port", dest="remote_port", metavar="REMOTE", type=_argument(parse_port), required=True
    )
    tunnel.add_argument(
        "--local-port",
        metavar="L",
        type=_argument(parse_port),
        help="local port (default: REMOTE when it is 1024 or above, else a free port)",
    )
    tunnel.set_defaults(func=Later("cli.client_connect", "run_tunnel"))

    config = subparsers.add_parser(
        "ssh-config",
        help="print an OpenSSH config block, one `Host ASSET.gatepass` per usable grant",
        description="Write each usable grant's certificate and print a config for "
        "`ssh -F FILE ASSET.gatepass` or an Include; run it again after each approval.",
    )
    config.add_argument(
        "--write",
        action="store_true",
        help="also write the config to ssh_config in the state directory and make ~/.ssh/config include it, so "
        "`ssh ASSET.gatepass`, scp, sftp and editors' Remote-SSH work without -F",
    )
    config.set_defaults(func=Later("cli.client_connect", "run_ssh_config"))


def _keys(subparsers: Subparsers) -> None:
    """key export: cli.client_keys."""
    key = subparsers.add_parser("key", help="your SSH key for other tools (PuTTY, plink, psftp)")
    verbs = key.add_subparsers(dest="verb", metavar="VERB", required=True)
    export = verbs.add_parser(
        "export",
        help="your key with a grant's certificate inside, for PuTTY, plink and psftp 0.78 or later",
        description="Write a PuTTY key file (.ppk, version 3) holding your key and the certificate of your grant "
        "for each asset you may reach over SSH (or for --asset alone), to putty/ASSET.ppk in the state directory. "
        "Export again after each approval: the certificate ends with its grant.",
    )
    export.add_argument("--format", choices=["ppk"], required=True, help="ppk: PuTTY's key file, version 3")
    export.add_argument("--asset", metavar="ASSET", type=_argument(check_asset_name),
                        help="only this asset's grant (default: every asset you have an SSH grant for)")
    export.add_argument("--out", metavar="FILE", type=Path, help="write to FILE (with --asset)")
    export.add_argument("--passphrase-file", metavar="F", type=Path,
                        help="protect the file with the passphrase on F's first line, ASCII only (PuTTY asks for it; "
                        "without one the file is only as safe as the folder it is in)")
    export.add_argument("--json", action="store_true", help="print a JSON list: asset, file, grant, gateway, ...")
    export.set_defaults(func=Later("cli.client_keys", "run_key_export"))
