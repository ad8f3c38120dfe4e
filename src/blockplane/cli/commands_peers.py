"""``blockplane peer add|list|show|remove``: the other hosts' agents this agent trusts.

The token file is read here and sent to the local agent once; no output ever contains it.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from blockplane.api.peer_bodies import PeerOut, PeerShowOut
from blockplane.cli.client import EXIT_INVALID, CLIError, api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch, fetch_list
from blockplane.cli.output import console, key_values, print_json, table

MAX_FILE_BYTES = 256 * 1024


@click.group("peer")
def peer_group() -> None:
    """Other hosts' agents, reached over HTTPS with a pinned CA and their token."""


def _read(path: Path, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_FILE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as error:
        raise CLIError(f"cannot read the {what} {path}: {error}", EXIT_INVALID) from None
    if len(text) > MAX_FILE_BYTES:
        raise CLIError(f"the {what} {path} is over {MAX_FILE_BYTES} bytes", EXIT_INVALID)
    return text


@peer_group.command("add")
@click.argument("name")
@click.option("--api", "api", required=True, metavar="https://HOST:PORT", help="Its agent's API.")
@click.option(
    "--token-file",
    required=True,
    type=click.Path(path_type=Path),
    help="A file holding the peer's token (its $BLOCKPLANE_HOME/token).",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path),
    default=None,
    help="PEM of the CA that signed the peer's certificate; only it is trusted for this peer.",
)
@json_option
@pass_cli
def peer_add(
    context: CLIContext,
    name: str,
    api: str,
    token_file: Path,
    ca_file: Path | None,
    as_json: bool,
) -> None:
    """Add a peer: it must answer over TLS with that token before anything is recorded."""
    token = _read(token_file, "token file").strip()
    if not token:
        raise CLIError(f"the token file {token_file} is empty", EXIT_INVALID)
    ca_pem = _read(ca_file, "CA file") if ca_file is not None else None
    peer = fetch(context.client, PeerOut, "POST", "/v1/peers",
                 {"name": name, "api": api, "token": token, "ca_pem": ca_pem})
    if as_json:
        print_json(peer)
        return
    console.print(
        f"peer {peer.name} added: {peer.api} answered as {peer.hostname or '?'} "
        f"(blockplane {peer.version or '?'}); token set, CA {_fingerprints(peer)}"
    )


@peer_group.command("list")
@json_option
@pass_cli
def peer_list(context: CLIContext, as_json: bool) -> None:
    """The peers of this agent (their tokens are never shown)."""
    peers = fetch_list(context.client, PeerOut, "GET", "/v1/peers")
    if as_json:
        print_json(peers)
        return
    rows = [{**peer.model_dump(), "ca": _fingerprints(peer)} for peer in peers]
    table(
        rows,
        [("name", "peer"), ("api", "api"), ("token", "token"), ("ca", "CA (SHA-256)"),
         ("hostname", "host"), ("version", "version")],
        title="peers",
    )


@peer_group.command("show")
@click.argument("name")
@json_option
@pass_cli
def peer_show(context: CLIContext, name: str, as_json: bool) -> None:
    """A peer, and whether it answers now (its version and host name)."""
    peer = fetch(context.client, PeerShowOut, "GET", api_path("peers", name))
    if as_json:
        print_json(peer)
        return
    now = peer.now
    answers = (
        f"yes: {now.hostname or '?'}, blockplane {now.version or '?'}"
        if now.answers
        else f"no [{now.code}]: {now.detail}"
    )
    key_values(
        {
            "name": peer.name,
            "api": peer.api,
            "token": peer.token,
            "CA (SHA-256)": _fingerprints(peer),
            "added": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(peer.added_at)),
            "answers now": answers,
        },
        title=f"peer {name}",
    )


@peer_group.command("remove")
@click.argument("name")
@json_option
@pass_cli
def peer_remove(context: CLIContext, name: str, as_json: bool) -> None:
    """Forget a peer (and its token)."""
    peer = fetch(context.client, PeerOut, "DELETE", api_path("peers", name))
    if as_json:
        print_json(peer)
    else:
        console.print(f"peer {peer.name} removed")


def _fingerprints(peer: PeerOut) -> str:
    return ", ".join(peer.ca_fingerprints) or "the system's CAs"
