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


class _Project:
    """A stand-in for `Google`'s two cluster reads: what each call was asked is recorded."""

    def __init__(self, listed: dict, list_error: Exception | None = None):
        self.listed, self.list_error, self.asked = listed, list_error, []

    def clusters(self, location):
        self.asked.append(("clusters", location))
        if self.list_error:
            raise self.list_error
        return {n: f"{n}@{location}" for n in self.listed.get(location, ())}

    def get_cluster(self, location, name):
        self.asked.append(("get_cluster", location, name))
        return None if name == "gone" else f"{name}@{location} (alone)"


def _google_memo(project, answers, scope="p"):
    from resources.memo import GOOGLE_READS, Memo
    return Memo(lambda: project, GOOGLE_READS, ("google", scope), answers, project="p")


def _tick(envs_here: int = 2) -> Answers:
    return Answers(listing={("p", "us-central1"): envs_here})


def test_a_tick_reads_a_project_s_clusters_with_one_list_and_an_unlisted_one_alone():
    project = _Project({"us-central1": ["a", "b"]})
    answers = _tick()
    one, two = _google_memo(project, answers, "one"), _google_memo(project, answers, "one")  # two environments, one project
    assert one.get_cluster("us-central1", "a") == "a@us-central1"
    assert two.get_cluster("us-central1", "b") == "b@us-central1"
    assert two.get_cluster("us-central1", "gone") is None  # not listed: asked by name, GKE says not found
    assert project.asked == [("clusters", "us-central1"), ("get_cluster", "us-central1", "gone")]


def test_a_refused_list_falls_back_to_one_read_per_cluster():
    from resources.errors import PermissionDenied
    project = _Project({}, list_error=PermissionDenied("container.clusters.list denied", "grant it"))
    memo = _google_memo(project, _tick(), "refused")
    assert memo.get_cluster("us-central1", "a") == "a@us-central1 (alone)"
    assert memo.get_cluster("us-central1", "b") == "b@us-central1 (alone)"
    assert project.asked == [("clusters", "us-central1"), ("get_cluster", "us-central1", "a"),
                             ("get_cluster", "us-central1", "b")]  # the list's error is remembered, not asked again


def test_outside_a_tick_a_cluster_is_read_by_name():
    project = _Project({"us-central1": ["a", "b"]})
    memo = _google_memo(project, Answers())
    assert memo.get_cluster("us-central1", "a") == "a@us-central1 (alone)"
    assert project.asked == [("get_cluster", "us-central1", "a")]


def test_a_tick_with_one_environment_in_a_location_reads_its_cluster_by_name():
    project = _Project({"us-central1": ["a", "b"]})
    memo = _google_memo(project, _tick(envs_here=1), "single")
    assert memo.get_cluster("us-central1", "a") == "a@us-central1 (alone)"
    assert project.asked == [("get_cluster", "us-central1", "a")]


def test_a_list_far_larger_than_what_the_tick_observes_is_not_made_again():
    """A project holding many more clusters than the tick's environments there: listed once (to learn its
    size), then each environment's cluster is read by name, as the list would parse them all."""
    project = _Project({"us-central1": [f"c{i}" for i in range(5)]})
    first = _google_memo(project, _tick(), "big")
    assert first.get_cluster("us-central1", "c0") == "c0@us-central1"
    assert first.get_cluster("us-central1", "c1") == "c1@us-central1"
    assert project.asked == [("clusters", "us-central1")]
    later = _google_memo(project, _tick(), "big")  # the next tick: 5 listed > 2 per each of 2 environments
    assert later.get_cluster("us-central1", "c0") == "c0@us-central1 (alone)"
    assert project.asked[1:] == [("get_cluster", "us-central1", "c0")]
