"""RLlib PPO on an aligngym token-level env, in this process (``num_env_runners=0``); optional extra ``rllib``.

``ray[rllib]`` pins an older gymnasium (1.2.2 when checked), so run this from its own virtualenv:

    python -m venv /work/venv-extras && /work/venv-extras/bin/pip install torch==2.13.0
    /work/venv-extras/bin/pip install -e . "ray[rllib]"
    /work/venv-extras/bin/python benchmarks/examples/rllib_ppo_token.py --iterations 12
    /work/venv-extras/bin/python benchmarks/examples/rllib_ppo_token.py --env-id aligngym/Sentiment-Token-v0 \\
        --action-vocab " good" " great" " bad" " the" "." "<|endoftext|>" --iterations 4
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-id", default="aligngym/Target-Token-v0")
    p.add_argument(
        "--action-vocab", nargs="+", default=None, help="restricted action vocabulary (token strings)"
    )
    p.add_argument("--iterations", type=int, default=12, help="PPO iterations of --batch env steps each")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs for the local Ray instance")
    args = p.parse_args(argv)

    import ray

    from aligngym.envs.rllib import ppo_config

    env_config = {"action_vocab": args.action_vocab} if args.action_vocab else {}
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    start = time.time()
    try:
        config = ppo_config(args.env_id, env_config, seed=args.seed, train_batch_size=args.batch, lr=args.lr)
        algo = config.build_algo() if hasattr(config, "build_algo") else config.build()
        returns = []
        for i in range(args.iterations):
            result = algo.train()
            ret = result["env_runners"].get("episode_return_mean", math.nan)
            returns.append(float(ret))
            steps = result.get(
                "num_env_steps_sampled_lifetime", result["env_runners"].get("num_env_steps_sampled_lifetime")
            )
            print(
                f"iteration {i}: episode_return_mean {ret:.4f}, env steps {steps}, {time.time() - start:.0f} s"
            )
        algo.stop()
    finally:
        ray.shutdown()
    return {"env_id": args.env_id, "returns": returns, "seconds": round(time.time() - start, 1)}


if __name__ == "__main__":
    main()
