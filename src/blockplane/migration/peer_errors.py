"""The errors of talking to a peer agent, one code per way it can go wrong.

    peer.invalid, peer.name_invalid  400  a bad URL, name, token or CA (nothing contacted)
    peer.insecure                    400  an ``http://`` URL: peers are reached over TLS only
    peer.auth                        400  the peer refused the token
    peer.tls                         400  the peer's certificate is not signed by the pinned CA
                                          (or it does not speak TLS, or its name does not match)
    peer.not_found / peer.exists     404 / 409
    peer.unreachable                 502  refused, no route, no answer in time (CLI exit 3)
    peer.bad_answer                  502  it answered, but not as a blockplane agent does

A wrong token or CA is the caller's input to fix, so those are 4xx (exit 2). Messages never
contain the token.
"""

from __future__ import annotations

from blockplane.errors import InvalidInput, OperationFailed


class PeerInvalid(InvalidInput):
    code = "peer.invalid"
    title = "Invalid peer"


class PeerInsecure(PeerInvalid):
    code = "peer.insecure"
    title = "Peer URL is not HTTPS"


class PeerAuthRefused(InvalidInput):
    code = "peer.auth"
    title = "The peer refused the token"


class PeerTLSFailed(InvalidInput):
    code = "peer.tls"
    title = "The peer's TLS certificate is not trusted"


class PeerUnreachable(OperationFailed):
    code = "peer.unreachable"
    http_status = 502
    title = "Peer unreachable"


class PeerBadAnswer(OperationFailed):
    code = "peer.bad_answer"
    http_status = 502
    title = "The peer did not answer as a blockplane agent"
