"""Drive a served aligngym env with the OpenEnv client (WebSocket session) and with raw HTTP (optional extra ``serve``).

Start a server first (``aligngym serve aligngym/Sentiment-Sequence-v0 --port 8000``) and pass ``--url``, or leave
``--url`` out and the example serves the env itself from a background thread on 127.0.0.1:

    python benchmarks/examples/openenv_client.py
    python benchmarks/examples/openenv_client.py --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
from typing import Any

COMPLETIONS = ["a delightful, warm and friendly place", "cold, bland and overpriced", "okay"]


def run(url: str) -> list[dict[str, Any]]:
    """Reset on three prompts, send one text completion each; then one self-contained raw HTTP step."""
    import httpx

    from aligngym.envs.serving import AlignGymClient, CompletionAction

    out = []
    with AlignGymClient(base_url=url).sync() as env:  # one WebSocket session = one env on the server
        for i, text in enumerate(COMPLETIONS):
            first = env.reset(prompt_index=i)
            result = env.step(CompletionAction(completion=text))
            obs = result.observation
            print(
                f"[ws]   {first.observation.prompt!r} + {text!r} -> reward {result.reward:+.4f} {obs.reward_components}"
            )
            out.append({"prompt": obs.prompt, "completion": text, "reward": result.reward})
        print(f"[ws]   state: {env.state()}")
    # plain HTTP: every request gets a fresh env, so the action carries its prompt index
    body = {"action": {"completion": COMPLETIONS[0], "prompt_index": 0}}
    data = httpx.post(f"{url}/step", json=body, timeout=30).json()
    print(f"[http] POST /step {body} -> reward {data['reward']:+.4f}, done={data['done']}")
    out.append(
        {"prompt": data["observation"]["prompt"], "completion": COMPLETIONS[0], "reward": data["reward"]}
    )
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server; default: serve --env-id in this process")
    p.add_argument("--env-id", default="aligngym/Sentiment-Sequence-v0")
    args = p.parse_args(argv)
    if args.url:
        return run(args.url)
    from aligngym.envs.serving import ServerThread, create_server_app

    with ServerThread(create_server_app(args.env_id)) as server:
        print(f"serving {args.env_id} at {server.url}")
        return run(server.url)


if __name__ == "__main__":
    main()
