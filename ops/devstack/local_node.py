"""The dev stack's local node: a tiny model made here, a local key in a 0600 file."""

import subprocess
import sys
from pathlib import Path
from typing import Protocol


class Stack(Protocol):
    data_dir: Path

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]: ...


def _host(home: Path, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "b3iq-host"), "--home", str(home), *args]


MODEL = "tiny-llama"


def start_local_node(stack: Stack, port: int, *, control_plane: str) -> tuple[str, list[str]]:
    """Start the node, enrolled in the dev control plane and offering its model to the
    network; returns its node id and copy-paste examples."""
    home = stack.data_dir / "node"
    model = home / "models" / "tiny-llama.gguf"
    key_file = stack.data_dir / "local-api-key"
    if not (home / "node.sqlite3").exists():
        subprocess.run(_host(home, "init"), check=True, capture_output=True)
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            _host(home, "models", "make-tiny", str(model)), check=True, capture_output=True
        )
    if not key_file.exists():
        subprocess.run(
            _host(home, "keys", "create", "--name", "dev", "--out", str(key_file)),
            check=True,
            capture_output=True,
        )
    enrolled = home / ".enrolled-in-dev-stack"
    if not enrolled.exists():
        # Managed Mode in the dev stack: the node heartbeats and /v1/nodes shows it.
        subprocess.run(
            _host(home, "enroll", "--control-plane", control_plane), check=True, capture_output=True
        )
        enrolled.touch()
    # The owner's consent to serve the model to the network (paid, network_beta tier).
    subprocess.run(_host(home, "models", "offer", MODEL), check=True, capture_output=True)
    node_id = subprocess.run(
        _host(home, "id"), check=True, capture_output=True, text=True
    ).stdout.strip()
    stack.spawn("node", *_host(home, "run", "--port", str(port), "--model", str(model)))
    base = f"http://127.0.0.1:{port}/v1"
    hints = ["Try the local node (the key is read from a file, never put in argv):"]
    hints.append(
        f'  curl -s {base}/chat/completions -H "Authorization: Bearer $(cat {key_file})" \\\n'
        '    -H "Content-Type: application/json" \\\n'
        '    -d \'{"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}],'
        ' "max_tokens": 16}\''
    )
    hints.append(
        f'  uv run python -c \'import openai; c = openai.OpenAI(base_url="{base}", '
        f'api_key=open("{key_file}").read().strip()); '
        'print(c.chat.completions.create(model="tiny-llama", max_tokens=16, '
        'messages=[{"role": "user", "content": "hi"}]))\''
    )
    return node_id, hints
