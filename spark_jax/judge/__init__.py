"""Judges that score the nine candidate actions of a step on 0-10.

``build_judge(JudgeConfig(...))`` gives an :class:`~spark_jax.judge.openai_judge.OpenAIJudge`
(GPT-4o or any OpenAI-compatible server, structured output, retries, cache, cost budget) or a
:class:`~spark_jax.judge.local_judge.LocalJudge` (expected score from the in-process model's
next-token probabilities). Heavy modules (openai, jax) load only when a judge is built.
"""

from spark_jax.judge.config import JudgeConfig, build_judge

__all__ = ["JudgeConfig", "build_judge"]
