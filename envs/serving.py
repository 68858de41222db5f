"""An aligngym task served as an OpenEnv environment (``reset`` / ``step`` / ``state`` over HTTP and WebSocket).

The public names live here: the environment, wire models and client (:mod:`aligngym.envs.serving_env`), the app
with its limits and metrics (:mod:`aligngym.envs.serving_app`), and ``main`` / ``serve`` for ``aligngym serve`` and
``python -m aligngym.envs.serving`` with one or several worker processes (:mod:`aligngym.envs.serving_workers`).
Optional extra ``serve``: ``import aligngym.envs`` never imports this module or openenv-core.
"""

from __future__ import annotations

import sys

from aligngym.envs.serving_app import (
    GracefulServer,
    ServerLimits,
    ServerMetrics,
    ServerThread,
    ServingGuard,
    ServingHub,
    SessionSlots,
    create_server_app,
)
from aligngym.envs.serving_env import (
    CHARS_PER_TOKEN_CAP,
    MAX_ACTIONS,
    MAX_COMPLETION_CHARS,
    ActionError,
    AlignGymClient,
    AlignGymEnvironment,
    CompletionAction,
    EnvTemplate,
    EpisodeState,
    PromptObservation,
    ServerRefusedError,
    SessionLostError,
)
from aligngym.envs.serving_workers import ServeConfig, config_from_args, main, serve

__all__ = [
    "CHARS_PER_TOKEN_CAP",
    "MAX_ACTIONS",
    "MAX_COMPLETION_CHARS",
    "ActionError",
    "AlignGymClient",
    "AlignGymEnvironment",
    "CompletionAction",
    "EnvTemplate",
    "EpisodeState",
    "GracefulServer",
    "PromptObservation",
    "ServeConfig",
    "ServerLimits",
    "ServerMetrics",
    "ServerRefusedError",
    "ServerThread",
    "ServingGuard",
    "ServingHub",
    "SessionLostError",
    "SessionSlots",
    "config_from_args",
    "create_server_app",
    "main",
    "serve",
]

if __name__ == "__main__":
    sys.exit(main())
