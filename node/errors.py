"""Errors as values with stable codes; the API layer renders them, never a traceback."""

from http import HTTPStatus


class NodeError(Exception):
    """A failure a client can act on: HTTP status, stable code, message, offending field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        family: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.family = family or code
        """The stable B3IQ code this specific one belongs to (e.g. `unauthorized`)."""

    @property
    def title(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Error"


def unauthorized(code: str, message: str) -> NodeError:
    return NodeError(401, code, message, family="unauthorized")


def invalid_request(message: str, param: str | None = None) -> NodeError:
    return NodeError(400, "invalid_request", message, param=param)
