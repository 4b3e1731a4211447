"""TLS and mutual TLS on the gRPC port, from PEM files (server and client side)."""

from __future__ import annotations

import grpc

from ..errors import InvalidArgument


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read the {what} {path!r}: {e.strerror}") from None


def server_credentials(cert: str, key: str, client_ca: str = ""):
    """None (plaintext) when no certificate is configured; with client_ca, clients must present
    a certificate that CA signed."""
    if not cert and not key:
        if client_ca:
            raise InvalidArgument("tls_client_ca needs tls_cert and tls_key")
        return None
    if not (cert and key):
        raise InvalidArgument("TLS needs both tls_cert and tls_key")
    ca = _read(client_ca, "client CA bundle") if client_ca else None
    return grpc.ssl_server_credentials([(_read(key, "TLS key"), _read(cert, "TLS certificate"))],
                                       root_certificates=ca, require_client_auth=ca is not None)
