import re

from spark_jax.protocol import prompts
from spark_jax.protocol.actions import format_action

Q = {
    "question_id": 1, "question": "What is 2+2?", "options": ["3", "4", "5"], "answer": "B",
    "answer_index": 1, "cot_content": "", "category": "math", "src": "x",
}


def test_question_uses_the_official_layout():
    text = prompts.question_prompt(Q)
    assert text.startswith("The following are multiple choice questions (with answers) about math.")
    assert "Question:\nWhat is 2+2?\nOptions:\nA. 3\nB. 4\nC. 5\nAnswer: Let's think step by step." in text


def test_initial_messages_list_every_action_and_the_format():
    msgs = prompts.initial_messages(Q)
    assert [m["role"] for m in msgs] == ["system", "user"]
    system = msgs[0]["content"]
    for name in prompts.candidate_actions() + ("answer",):
        assert f"- {name}:" in system
    assert "Action: <name>\nInput: <text>" in system
    assert len(prompts.candidate_actions()) == 9 and prompts.candidate_actions()[-1] == "cot"


def test_observation_messages_show_errors_and_cut_long_output():
    assert prompts.observation_message(True, " 42 ", None, 100) == {"role": "user", "content": "Observation: 42"}
    assert prompts.observation_message(False, "", "division by zero", 100)["content"] == "Observation: Error: division by zero"
    long = prompts.observation_message(True, "x" * 50, None, 10)["content"]
    assert long.startswith("Observation: xxxxxxxxxx\n[... cut at 10 characters]")


def test_generator_messages_append_one_instruction():
    state = prompts.initial_messages(Q)
    req = prompts.generator_messages(state, "calculator")
    assert req[:-1] == state and req[-1]["role"] == "user" and "calculator" in req[-1]["content"]
    assert "final answer" in prompts.generator_messages(state, "answer")[-1]["content"]


def test_clean_generation():
    assert prompts.clean_generation("```python\nprint(1)\n```", "python") == "print(1)"
    assert prompts.clean_generation(format_action("calculator", "2*3"), "calculator") == "2*3"
    assert prompts.clean_generation("Input: 2*3", "calculator") == "2*3"
    assert prompts.clean_generation("  I think B.  ", "cot") == "I think B."


def test_descriptions_end_in_one_full_stop():
    specs = (prompts.ActionSpec("calculator", "Evaluates arithmetic.", "one expression"),)
    system = prompts.system_prompt(specs)
    assert "- calculator: Evaluates arithmetic.\n" in system
    assert "one expression" not in system  # formats appear only when the tool's input is asked for
    assert "Input format: one expression." in prompts.generator_instruction("calculator", specs)
    double_stop = re.compile(r"[^.]\.\.(?!\.)")  # ".." but not an ellipsis
    assert not double_stop.search(system)
    assert not double_stop.search(prompts.generator_instruction("calculator", specs))
