"""A minimal streaming chat client for `b3iq-host chat`."""

from typing import TextIO

import httpx
import msgspec
from rich.console import Console


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []


class _Model(msgspec.Struct):
    id: str


class _Models(msgspec.Struct):
    data: list[_Model]


def error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def chat_loop(
    url: str,
    key: str,
    *,
    model: str | None,
    prompt: str | None,
    max_tokens: int,
    stdin: TextIO,
    console: Console,
) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
        if model is None:
            response = client.get("/v1/models")
            if response.status_code != 200:
                console.print(f"[red]{error_message(response)}[/]")
                return 1
            models = msgspec.json.decode(response.content, type=_Models).data
            if not models:
                console.print("[red]this node serves no models[/]")
                return 1
            model = models[0].id
        history: list[dict[str, str]] = []
        prompts = [prompt] if prompt is not None else (line.rstrip("\n") for line in stdin)
        for text in prompts:
            history.append({"role": "user", "content": text})
            body = {"model": model, "messages": history, "max_tokens": max_tokens, "stream": True}
            parts: list[str] = []
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    console.print(f"[red]{error_message(response)}[/]")
                    return 1
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    for choice in msgspec.json.decode(line[6:], type=_Chunk).choices:
                        if choice.delta and choice.delta.content:
                            parts.append(choice.delta.content)
                            console.print(choice.delta.content, end="", markup=False)
            console.print()
            history.append({"role": "assistant", "content": "".join(parts)})
    return 0
