"""Server URLs as operators write them, and as they may be shown."""


def redact(url: str) -> str:
    """The URL with any password replaced, safe for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url


def server_list(urls: str) -> list[str]:
    """B3IQ_NATS_URL names one server or, comma-separated, several members of a cluster."""
    return [u.strip() for u in urls.split(",") if u.strip()]
