"""An OpenAI-shaped chat completions endpoint that does no work: a canned 16-token answer.

What the openai client plus one HTTP exchange cost on their own, served the way
`b3iq-host run` serves (uvicorn, same event loop and parser), so that
bench_local_inference can show the floor under any HTTP server's calls/s. Run:
`python -m ops.bench.noop_openai_server --port N`.
"""

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import uvicorn

Event = dict[str, Any]

ANSWER = msgspec.json.encode(
    {
        "id": "chatcmpl-noop",
        "object": "chat.completion",
        "created": 0,
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "x" * 40},
                "finish_reason": "length",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 27, "completion_tokens": 16, "total_tokens": 43},
    }
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]


async def app(
    scope: Event, receive: Callable[[], Awaitable[Event]], send: Callable[[Event], Awaitable[None]]
) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to start
    while (await receive()).get("more_body"):  # read the request body, as a server must
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER, "more_body": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
