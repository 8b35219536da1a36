"""Front refinement: the search runs first the untried neighbour of its front that its trials predict gains most."""

import random

import pytest

from qa_compress.sweep import front, refine, search, search_plan, search_space

DIRECTIONS = [front.MAXIMIZE, front.MAXIMIZE]
NAMES = ["f1", "speedup"]
REFERENCE = [45.0, 0.5]


def _point(q: str, position: int, values: list[float]) -> refine.Point:
    return refine.Point({"quantization": q, "pruning.amount#position": position}, values)


def _untried(points: list[refine.Point]):
    tried = [dict(p.params) for p in points]

    def neighbours(params):
        moves = [{**params, "quantization": q} for q in ("a", "b") if q != params["quantization"]]
        moves += [
            {**params, "pruning.amount#position": params["pruning.amount#position"] + d}
            for d in (-1, 1)
            if 0 <= params["pruning.amount#position"] + d <= 4
        ]
        return [m for m in moves if m not in tried]

    return neighbours


def test_a_change_seen_to_help_is_carried_to_the_other_front_configuration():
    # Quantizing (a -> b) doubled the speed for one F1 point; pruning more (position 0 -> 1) gained two F1.
    points = [_point("a", 0, [50.0, 1.0]), _point("b", 0, [49.0, 2.0]), _point("a", 1, [52.0, 1.0])]
    chosen = refine.next_candidate(points, NAMES, DIRECTIONS, REFERENCE, _untried(points), random.Random(0))
    assert chosen == {"quantization": "b", "pruning.amount#position": 1}  # predicted F1 51 at 2x: beyond both


def test_effects_are_differences_for_accuracy_and_ratios_for_speed():
    points = [_point("a", 0, [50.0, 1.0]), _point("b", 0, [49.0, 2.0]), _point("a", 1, [52.0, 1.5])]
    known = refine.effects(points, NAMES)
    assert known[("quantization", "a", "b")] == [-1.0, 2.0]
    assert known[("pruning.amount#position", 0, 1)] == [2.0, 1.5]
    assert refine.predict(points[1], ("pruning.amount#position", 0, 1), known, NAMES, DIRECTIONS, [3, 1]) == [51.0, 3.0]


def test_a_neighbour_known_to_lose_is_left_to_the_sampler_and_an_unseen_change_is_tried():
    # Pruning more (0 -> 1) was seen to cost F1 and speed under b; under a, the front's one configuration.
    points = [_point("a", 0, [50.0, 1.0]), _point("b", 0, [48.0, 0.9]), _point("b", 1, [45.5, 0.8])]
    only_more = lambda params: [{**params, "pruning.amount#position": 1}]  # noqa: E731
    assert refine.next_candidate(points, NAMES, DIRECTIONS, REFERENCE, only_more, random.Random(0)) is None
    other_runtime = lambda params: [{**params, "quantization": "c"}]  # noqa: E731  (never seen: worth a try)
    chosen = refine.next_candidate(points, NAMES, DIRECTIONS, REFERENCE, other_runtime, random.Random(0))
    assert chosen == {"quantization": "c", "pruning.amount#position": 0}


def test_trials_below_the_reference_point_are_not_refined():
    points = [_point("a", 0, [40.0, 3.0]), _point("b", 0, [44.0, 4.0])]  # both below always-no-answer F1
    assert refine.next_candidate(points, NAMES, DIRECTIONS, REFERENCE, _untried(points), random.Random(0)) is None


# Through the search loop ------------------------------------------------------------------------------

SPACE = [
    "pruning=choice(none,l1_unstructured)",
    "pruning.amount=choice(0.1,0.2,0.3,0.4,0.5)",
    "quantization=choice(none,dynamic_int8,onnx_int8)",
]
SPEED = {"none": 1.0, "dynamic_int8": 1.3, "onnx_int8": 1.6}


def _measure(overrides: list[str]) -> dict[str, float]:
    """A smooth made-up space: pruning 0.3 is most accurate, pruning more is faster, each runtime has its speed."""
    chosen = dict(o.split("=", 1) for o in overrides)
    amount = float(chosen.get("pruning.amount", 0))
    f1 = 58.0 - 40 * (amount - 0.3) ** 2 - (0.5 if chosen["quantization"] != "none" else 0)
    return {"f1": f1, "speedup": SPEED[chosen["quantization"]] * (1 + amount), "always_no_answer_f1": 50.0}


def _search(tmp_path, refine_front: bool, trials: int = 11) -> list:
    space = search_space.parse(SPACE, None, ["pruning", "quantization"])
    keys = {
        ("pruning", "none"): frozenset(),
        ("pruning", "l1_unstructured"): frozenset({"amount"}),
        **{("quantization", q): frozenset() for q in SPEED},
    }
    chosen = search_plan.settings(
        {
            "objectives": NAMES,
            "n_trials": trials,
            "batch_size": 1,
            "sampler": "tpe",
            "seed": 3,
            "n_startup_trials": 5,
            "refine": refine_front,
        },
        {},
    )
    plan = search_plan.Plan(space, chosen, keys, f"sqlite:///{tmp_path / f'{refine_front}.db'}", "refine")

    def launch(batch, first_index):
        return [search.outcome_of(NAMES, _measure(overrides), None) for overrides in batch]

    runner = search.Search(plan, launch, lambda batch: None, lambda o: " ".join(sorted(o)), [], None, "")
    runner.run()
    return [t for t in runner.study.trials if t.state.name == "COMPLETE"]


@pytest.mark.slow
def test_after_its_startup_trials_the_search_refines_the_front_one_step_at_a_time(tmp_path):
    trials = _search(tmp_path, refine_front=True)
    refined = [t for t in trials if t.user_attrs.get("refines_front")]
    assert refined and all(t.number >= 5 for t in refined)
    for trial in refined:  # each one step (one choice, or one amount position) from a trial finished before it
        earlier = [{k: v for k, v in t.params.items() if k in trial.params} for t in trials if t.number < trial.number]
        assert any(refine.change(e, trial.params) for e in earlier)
    grid = [
        _measure(c)
        for c in (
            [["pruning=none", f"quantization={q}"] for q in SPEED]
            + [
                ["pruning=l1_unstructured", f"pruning.amount={a}", f"quantization={q}"]
                for a in (0.1, 0.2, 0.3, 0.4, 0.5)
                for q in SPEED
            ]
        )
    ]
    reference = [50.0, 1.0]
    whole = front.hypervolume([[m["f1"], m["speedup"]] for m in grid], reference, DIRECTIONS)
    refined_share = front.hypervolume([t.values for t in trials], reference, DIRECTIONS) / whole
    plain = _search(tmp_path, refine_front=False)
    plain_share = front.hypervolume([t.values for t in plain], reference, DIRECTIONS) / whole
    assert refined_share > plain_share
    assert refined_share > 0.95
