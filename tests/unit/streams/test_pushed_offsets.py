from fraudgraph.streams.pipeline import PushedOffsets


def pushed(offsets: list[int]) -> tuple[list[bool], list[list[int]]]:
    seen = PushedOffsets()
    copies = [seen.add(o) for o in offsets]
    return copies, seen.runs


def test_a_forward_run_covers_the_offsets_it_steps_over():
    # 3 and 7 are transaction markers: never delivered, and covered by the run.
    copies, runs = pushed([0, 1, 2, 4, 5, 6, 8])
    assert not any(copies) and runs == [[0, 9]]


def test_a_seek_back_hands_over_copies_until_it_passes_the_first_run():
    copies, runs = pushed([0, 1, 2, 0, 1, 2, 3])
    assert copies == [False, False, False, True, True, True, False]
    assert runs == [[0, 4]]


def test_records_below_everything_pushed_are_not_copies():
    """A client that resumed ahead of records given back at a rebalance, then seeks back to them."""
    copies, runs = pushed([10, 11, 12, 5, 6, 8, 9, 10, 11, 12, 13])
    assert copies == [False, False, False, False, False, False, False, True, True, True, False]
    assert runs == [[5, 14]]


def test_copies_counts_the_current_run_of_copies():
    seen = PushedOffsets()
    counts = []
    for o in [0, 1, 0, 1, 2, 1]:
        seen.add(o)
        counts.append(seen.copies)
    assert counts == [0, 0, 1, 2, 0, 1]
