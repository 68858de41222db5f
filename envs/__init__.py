"""aligngym environments: language-model alignment tasks as Gymnasium envs.

``import aligngym.envs`` registers every task as ``aligngym/<Task>-Token-v0`` and ``aligngym/<Task>-Sequence-v0`` (with
``-Flat-v0`` / ``-Embedding-v0`` observation variants), and the ids of the modules imported below; ``list_envs()`` lists
them. Importing stays light: tokenizers, scorers' models and reference models are built when an env needs them.
"""

from aligngym.envs.core import AlignmentEnv, SequenceEnv, TaskRuntime, TokenEnv
from aligngym.envs.tasks import (
    TASKS,
    Task,
    get_task,
    list_envs,
    register_all,
    register_env,
    register_task,
)
from aligngym.envs.tokenization import TextTokenizer, load_tokenizer

register_all()
import aligngym.envs.dialogue_tasks  # noqa: E402  (registers aligngym/Dialogue-* and aligngym/Guess-*)
import aligngym.envs.procedural  # noqa: E402, F401  (registers aligngym/Copy-*, ..., aligngym/Reasoning-*)

__all__ = [
    "TASKS",
    "AlignmentEnv",
    "SequenceEnv",
    "Task",
    "TaskRuntime",
    "TextTokenizer",
    "TokenEnv",
    "get_task",
    "list_envs",
    "load_tokenizer",
    "register_all",
    "register_env",
    "register_task",
]
