"""The shipped multi-turn tasks and their registration (``aligngym/Dialogue-*``, ``aligngym/Guess-*``).

``Dialogue``: a helpful assistant talks with a scripted user who opens with an everyday question (the Preference
task's prompts) and follows up; every turn is scored by the shipped preference reward model. ``Guess``: twenty
questions over a shipped attribute table, with a verifiable outcome (restricted to 8 one-token actions by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym


@dataclass(frozen=True)
class DialogueTask:
    """One multi-turn task: openings + a user simulator + scorers + limits.

    :param name: CamelCase name used in the env ids.
    :param description: one line for ``list_envs()``.
    :param prompt_file: JSONL file in ``aligngym.envs.data`` with the user's openings (``prompt`` + context
        columns), or ``None`` when the simulator writes the openings (``default_rows()``).
    :param simulator: ``"scripted"``, ``"guess"``, ``"lm"`` (see :mod:`aligngym.envs.simulators`).
    :param simulator_kwargs: options of the named simulator.
    :param turn_scorer: scorer spec paid at the end of every assistant turn, or ``None``.
    :param scorer: scorer spec paid at the end of the episode (``"goal"``: 1.0 on success), or ``None``.
    :param turn_prompt: how the turn scorer sees the prompt: ``{user}`` = the user's last message, ``{opening}``.
    :param max_turns: assistant turns per episode.
    :param max_turn_tokens: token budget of one assistant turn.
    :param max_context_tokens: L, the observation length (the whole history must fit, see ``context_overflow``).
    :param action_vocab: default restricted action vocabulary, or ``None`` for every token.
    :param chat_template: (user separator, assistant separator) text, each encoded once.
    :param opening_regex: when a row's ``prompt`` matches it, the user's opening is its first group (the Dialogue
        task reuses the single-turn ``"Q: ... A:"`` prompts this way); ``None``: the prompt as it is.
    """

    name: str
    description: str
    prompt_file: str | None
    simulator: str
    simulator_kwargs: dict[str, Any] = field(default_factory=dict)
    turn_scorer: Any = None
    scorer: Any = None
    turn_prompt: str = "{user}"
    max_turns: int = 3
    max_turn_tokens: int = 16
    max_context_tokens: int = 160
    action_vocab: tuple[str, ...] | None = None
    chat_template: tuple[str, str] = ("\nUser:", "\nAssistant:")
    opening_regex: str | None = None


GUESS_ACTIONS = (" fly", " swim", " eggs", " big", " cat", " dog", " fish", " bird")

DIALOGUE_TASKS: dict[str, DialogueTask] = {
    "Dialogue": DialogueTask(
        name="Dialogue",
        description="helpful assistant in a multi-turn chat with a scripted user; each turn scored by the "
        "preference reward model",
        prompt_file="preference_prompts.jsonl",
        simulator="scripted",
        turn_scorer="preference_rm",
        scorer=None,
        turn_prompt="Q: {user} A:",
        max_turns=3,
        # three turns of 16 tokens, the openings and the user's replies fit the shipped reference LM's 128
        # positions (sampled from it on the 20 test openings: 20/20 conversations reach the third turn)
        max_turn_tokens=16,
        max_context_tokens=128,
        opening_regex=r"Q: (.*?)\s+A:",
    ),
    "Guess": DialogueTask(
        name="Guess",
        description="twenty questions: ask yes/no questions about a secret animal, then guess it (one guess; "
        "8 one-token actions, 4 turns; difficulty 1-3)",
        prompt_file=None,
        simulator="guess",
        simulator_kwargs={"difficulty": 1},
        turn_scorer=None,
        scorer="goal",
        max_turns=4,
        max_turn_tokens=1,
        max_context_tokens=112,
        action_vocab=GUESS_ACTIONS,
        chat_template=("\nU:", "\nA:"),
    ),
}


def get_dialogue_task(task: str | DialogueTask) -> DialogueTask:
    """A :class:`DialogueTask` by name (case-insensitive), or the task itself."""
    if isinstance(task, DialogueTask):
        return task
    for name, t in DIALOGUE_TASKS.items():
        if name.lower() == str(task).lower():
            return t
    raise ValueError(f"unknown dialogue task {task!r}; dialogue tasks: {', '.join(DIALOGUE_TASKS)}")


def dialogue_env_ids(task: DialogueTask) -> tuple[str, str]:
    return f"aligngym/{task.name}-Token-v0", f"aligngym/{task.name}-Sequence-v0"


def register_dialogue_envs() -> list[str]:
    """Register every dialogue task's two ids (idempotent); returns the ids."""
    try:
        from aligngym.envs.tasks import register_env
    except ImportError:  # an older tasks.py without the shared table
        register_env = None
    ids: list[str] = []
    for task in DIALOGUE_TASKS.values():
        for env_id, kind in zip(dialogue_env_ids(task), ("Token", "Sequence")):
            entry = f"aligngym.envs.dialogue:Dialogue{kind}Env"
            vector_entry = f"aligngym.envs.dialogue_vector:Dialogue{kind}VectorEnv"
            kwargs: dict[str, Any] = {"task": task.name}
            if register_env is not None:
                register_env(
                    env_id,
                    entry,
                    vector_entry_point=vector_entry,
                    kwargs=kwargs,
                    description=f"[multi-turn {kind.lower()}] {task.description}",
                )
            elif env_id not in gym.registry:
                gym.register(id=env_id, entry_point=entry, vector_entry_point=vector_entry, kwargs=kwargs)
            ids.append(env_id)
    return ids


register_dialogue_envs()
