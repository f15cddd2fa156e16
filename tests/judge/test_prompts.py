import json

import pytest

from spark_jax.judge import prompts
from spark_jax.judge.prompts import ScoreFormatError, parse_scores
from spark_jax.protocol.interfaces import JudgeRequest

NINE_ACTIONS = ("calculator", "python", "sympy", "units", "chemistry", "constants", "finance", "search", "cot")


def valid(**changes):
    scores = {a: 5 for a in NINE_ACTIONS}
    scores.update(changes)
    return json.dumps({"scores": scores})


def test_question_has_lettered_options():
    text = prompts.format_question({"question": "Q?", "options": ["x", "y", "z"]})
    assert text == "Q?\nOptions:\nA. x\nB. y\nC. z"


def test_question_without_text_names_the_record():
    with pytest.raises(ValueError, match="question record 12"):
        prompts.format_question({"question_id": 12, "question": "  ", "options": ["a"]})


def test_judge_prompt_holds_question_trajectory_and_all_candidates(judge_request):
    system, user = prompts.judge_messages(judge_request)
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    assert "C. 9 J" in text and "physics" in text
    assert "Action: cot\nInput: KE = m v^2 / 2." in text and "Observation: noted." in text
    assert "Solve step by step with tools." not in text  # the policy's system prompt is not the judge's
    assert text.count("What is its kinetic energy?") == 1  # question shown once, with its options
    for a in NINE_ACTIONS:
        assert f"- {a}: {prompts.action_description(a)}" in text
    assert "NOW" in text and "0-10" in text


def test_empty_trajectory_is_said_plainly(judge_request):
    req = JudgeRequest(judge_request.question, judge_request.messages[:2], 0, NINE_ACTIONS)
    assert "(no steps taken yet)" in prompts.judge_messages(req)[1]["content"]


def test_unknown_or_repeated_action_is_refused(judge_request):
    with pytest.raises(KeyError, match="teleport"):
        prompts.judge_messages(JudgeRequest(judge_request.question, [], 0, ("cot", "teleport")))
    with pytest.raises(ValueError, match="repeat"):
        prompts.score_schema(("cot", "cot"))


def test_schema_requires_exactly_the_nine_keys():
    fmt = prompts.response_format(NINE_ACTIONS)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    inner = schema["properties"]["scores"]
    assert inner["required"] == list(NINE_ACTIONS)
    assert inner["additionalProperties"] is False and schema["additionalProperties"] is False
    assert inner["properties"]["finance"] == {"type": "integer", "minimum": 0, "maximum": 10}


def test_valid_reply_parses():
    assert parse_scores(valid(cot=10, search=0, python=7.0), NINE_ACTIONS)["python"] == 7
    assert parse_scores(valid(cot=10), NINE_ACTIONS)["cot"] == 10


@pytest.mark.parametrize("reply, message", [
    (None, "empty"),
    ("", "empty"),
    ("{scores: 5}", "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"score": {}}', "lacks the key 'scores'"),
    ('{"scores": {}, "why": "x"}', "unexpected top-level"),
    ('{"scores": [5, 5]}', "'scores' must be an object"),
    (json.dumps({"scores": {a: 5 for a in NINE_ACTIONS if a != "units"}}), r"missing key\(s\) \['units'\]"),
    (valid(teleport=3), r"unexpected key\(s\) \['teleport'\]"),
    (valid(sympy=7.5), "score for 'sympy' must be an integer, got 7.5"),
    (valid(sympy="7"), "score for 'sympy' must be an integer, got \"7\""),
    (valid(sympy=True), "score for 'sympy' must be an integer, got true"),
    (valid(sympy=None), "score for 'sympy' must be an integer, got null"),
    (valid(units=11), "score for 'units' is 11, outside 0..10"),
    (valid(units=-1), "score for 'units' is -1, outside 0..10"),
])
def test_invalid_replies_name_the_problem(reply, message):
    with pytest.raises(ScoreFormatError, match=message):
        parse_scores(reply, NINE_ACTIONS)


def test_single_action_prompt_asks_for_one_integer(judge_request):
    msgs = prompts.single_action_messages(judge_request, "units")
    assert "Proposed next action: units" in msgs[-1]["content"]
    assert "single integer from 0 to 10" in msgs[-1]["content"]
    assert "JSON" not in msgs[0]["content"]


def test_reask_names_error_and_keys():
    msg = prompts.reask_message("score for 'units' is 11, outside 0..10", NINE_ACTIONS)
    assert msg["role"] == "user" and "outside 0..10" in msg["content"] and "finance" in msg["content"]


def test_descriptions_come_from_the_tools_package():
    from spark_jax.tools import TOOLS

    for a in NINE_ACTIONS:
        assert prompts.action_description(a) == TOOLS[a].description
    with pytest.raises(KeyError, match="unknown action 'abacus'"):
        prompts.action_description("abacus")
