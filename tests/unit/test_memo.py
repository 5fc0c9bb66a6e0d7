"""A tick's memo of answers: one flight per question, and a cluster's answers let go when nobody needs them."""

from __future__ import annotations

from resources.memo import Answers


def test_a_scope_s_answers_are_kept_while_one_holder_is_left_and_forgotten_after_the_last():
    answers, asked = Answers(), []

    def nodes():
        asked.append(1)
        return ["node-a"]

    scope = ("kube", "/clusters/one")
    answers.hold(scope)
    answers.hold(scope)  # two environments on one cluster
    assert answers.ask(scope, ("nodes",), nodes) == (True, True, ["node-a"])
    answers.release(scope)
    assert answers.ask(scope, ("nodes",), nodes) == (False, True, ["node-a"]) and len(asked) == 1
    answers.release(scope)  # the last one is done: its answers go
    assert answers.ask(scope, ("nodes",), nodes) == (True, True, ["node-a"]) and len(asked) == 2
    answers.release(scope)  # more releases than holds never go negative:
    answers.hold(scope)  # one hold is one holder again
    assert answers.ask(scope, ("nodes",), nodes)[0] is True and answers.ask(scope, ("nodes",), nodes)[0] is False
    answers.release(scope)
    assert answers.ask(scope, ("nodes",), nodes)[0] is True and len(asked) == 4
