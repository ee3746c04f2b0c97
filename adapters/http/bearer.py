"""The credential in an ``Authorization: Bearer …`` header."""


def bearer_token(authorization: str | None) -> str | None:
    """The token, or None when the header is missing, empty or of another scheme."""
    scheme, _, value = (authorization or "").partition(" ")
    token = value.strip()
    return token if scheme.lower() == "bearer" and token else None
