"""What a failed connect to Temporal means, in one line an operator can act on.

The worker and complete_activity.py both report a failed `Client.connect` through
`describe_connect_error`, so they name the same cause in the same words.
"""

from __future__ import annotations

import re

_ALERT = re.compile(r"received fatal alert: (\w+)")
_BAD_SERVER_CERT = re.compile(r"InvalidCertificate\((\w+)")


def describe_connect_error(address: str, err: BaseException, tls: bool) -> str:
    """One line for a failed Client.connect, naming TLS when TLS is the likely cause.

    The SDK's message is a nested Rust error dump; an operator needs to know whether the
    server refused our certificate, we refused the server's, or nothing answered.
    """
    text = " ".join(str(err).split()) or type(err).__name__
    alert = _ALERT.search(text)
    bad_server = _BAD_SERVER_CERT.search(text)
    if alert:
        return (
            f"TLS handshake with Temporal at {address} failed: the server refused the client "
            f"certificate (TLS alert {alert.group(1)}); check client_cert_pem in Vault"
        )
    if bad_server:
        hint = (
            "set TEMPORAL_TLS_SERVER_NAME to the name in its certificate"
            if bad_server.group(1) in ("NotValidForName", "NotValidForNameContext")
            else "check ca_cert_pem in Vault"
        )
        return (
            f"TLS handshake with Temporal at {address} failed: the server's certificate is "
            f"not trusted ({bad_server.group(1)}); {hint}"
        )
    if "tcp connect error" in text or "Connection refused" in text:
        over = " over TLS" if tls else ""
        return f"cannot reach Temporal at {address}{over}: connection refused"
    if tls and "after connection" in text:
        return (
            f"TLS handshake with Temporal at {address} failed: the server closed the connection "
            "(it may have refused the client certificate); check client_cert_pem in Vault"
        )
    if tls and ("tls" in text.lower() or "handshake" in text.lower()):
        return f"TLS handshake with Temporal at {address} failed: {_short(text)}"
    if not tls and ("after connection" in text or "transport error" in text):
        return (
            f"cannot reach Temporal at {address} without TLS: the server closed the connection; "
            "if it requires mTLS, configure VAULT_ADDR, VAULT_ROLE_ID and VAULT_SECRET_ID_FILE"
        )
    over = " over TLS" if tls else ""
    return f"cannot reach Temporal at {address}{over}: {_short(text)}"


def _short(text: str) -> str:
    inner = re.findall(r'error: "([^"]+)"', text)
    return (inner[-1] if inner else text)[:300]
