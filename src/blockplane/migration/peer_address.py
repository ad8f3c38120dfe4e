"""What a peer is called and where it is: names, ``https://`` URLs, tokens and pinned CAs.

Pure validation, done before anything is contacted or recorded. Owns the rule that peers are
reached over HTTPS only (``peer.insecure`` for ``http://``). Must not open connections, and no
message may echo a token.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from blockplane.migration.peer_errors import PeerInsecure, PeerInvalid
from blockplane.storage.names import validate_name

MAX_URL_LENGTH = 2048
MAX_TOKEN_LENGTH = 4096
# A CA bundle is a few KiB; the bound keeps any refused body well under the 1 MiB request limit.
MAX_CA_BYTES = 64 * 1024
DEFAULT_HTTPS_PORT = 443
_DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_TOKEN = re.compile(r"[\x21-\x7e]+")
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----"
)


@dataclass(frozen=True)
class PeerAddress:
    """A peer agent's API endpoint; ``url`` is the normal form that is stored and shown."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def validate_peer_name(name: object) -> str:
    return validate_name("peer", name)


def parse_peer_url(url: object) -> PeerAddress:
    """``https://HOST[:PORT][/]``; anything else is refused, ``http://`` as ``peer.insecure``."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise PeerInvalid("the peer's API URL must be https://HOST:PORT")
    if any(not character.isprintable() or character.isspace() for character in url):
        raise PeerInvalid("the peer's API URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise PeerInvalid(f"the peer's API URL {url!r} is not valid: {error}") from None
    scheme = parts.scheme.lower()
    if scheme == "http":
        raise PeerInsecure(
            f"{url!r} is plain HTTP: agents talk to each other only over TLS with a pinned CA; "
            "give the peer's https:// URL (its agent started with --tls-cert and --tls-key)"
        )
    if scheme != "https":
        raise PeerInvalid(f"the peer's API URL {url!r} must start with https://")
    if "@" in parts.netloc:
        raise PeerInvalid("the peer's API URL must not carry credentials; use --token-file")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise PeerInvalid(f"the peer's API URL {url!r} must be only https://HOST:PORT")
    host = parts.hostname or ""
    if not _valid_host(host):
        raise PeerInvalid(f"the peer's API URL {url!r} has no valid host name or address")
    if port == 0:
        raise PeerInvalid(f"the peer's API URL {url!r} has port 0")
    return PeerAddress(host=host, port=DEFAULT_HTTPS_PORT if port is None else port)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _DNS_NAME.fullmatch(host) is not None and not host.replace(".", "").isdigit()
    return True


def validate_token(token: object) -> str:
    """A bearer token: 1 to 4096 visible ASCII characters (it goes into an HTTP header)."""
    if (
        not isinstance(token, str)
        or not 0 < len(token) <= MAX_TOKEN_LENGTH
        or _TOKEN.fullmatch(token) is None
    ):
        raise PeerInvalid(
            "the peer's token must be 1 to 4096 visible ASCII characters without spaces "
            "(the contents of the peer's $BLOCKPLANE_HOME/token)"
        )
    return token


def certificates_in(ca_pem: object) -> list[bytes]:
    """The DER form of every certificate in a PEM bundle; refuse a bundle with none."""
    if not isinstance(ca_pem, str) or len(ca_pem) > MAX_CA_BYTES:
        raise PeerInvalid("the CA file must be PEM text of at most 256 KiB")
    blocks = _PEM_CERTIFICATE.findall(ca_pem)
    if not blocks:
        raise PeerInvalid("the CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        return [ssl.PEM_cert_to_DER_cert(block) for block in blocks]
    except ValueError as error:
        raise PeerInvalid(f"the CA file has a malformed certificate: {error}") from None


def fingerprint(der: bytes) -> str:
    """``SHA256:AB:CD:...``, as ``openssl x509 -fingerprint -sha256`` prints it."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return "SHA256:" + ":".join(digest[index : index + 2] for index in range(0, len(digest), 2))


def pinned_context(ca_pem: str | None) -> ssl.SSLContext:
    """The client side of a peer connection: TLS 1.2 or later, the peer's name checked, and
    only ``ca_pem``'s certificates trusted (the system's CAs when there is no pinned CA)."""
    if ca_pem is None:
        context = ssl.create_default_context()
    else:
        certificates_in(ca_pem)
        try:
            context = ssl.create_default_context(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as error:
            raise PeerInvalid(f"the CA file cannot be used: {error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
