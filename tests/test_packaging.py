"""A non-editable install finds the shipped data (prompt sets, tokenizer) from site-packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_ships_data(tmp_path: Path) -> None:
    wheel_dir, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(ROOT)],
        check=True,
        timeout=300,
    )
    [wheel] = list(wheel_dir.glob("aligngym-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    code = (
        "import aligngym.envs, gymnasium as gym;"
        "from aligngym.envs.tokenization import default_tokenizer_path;"
        f"assert aligngym.envs.__file__.startswith({str(target)!r}), aligngym.envs.__file__;"
        f"assert str(default_tokenizer_path()).startswith({str(target)!r});"
        "env = gym.make('aligngym/Sentiment-Token-v0', split='test'); env.reset(seed=0);"
        "print(len(env.unwrapped.runtime.rows))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) > 0
