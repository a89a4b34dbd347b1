"""Chapter 1 exercises: the building blocks of BPE training, and the sliding window."""

from __future__ import annotations

from collections import Counter

from .checker import Case, Exercise, expect_equal, register

# ---------------------------------------------------------------- 1.1 count pairs


def _solution_count_pairs(ids: list[int]) -> dict[tuple[int, int], int]:
    return dict(Counter(zip(ids, ids[1:])))


def _wrong_count_pairs_non_overlapping(ids: list[int]) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for i in range(0, len(ids) - 1, 2):  # steps over every second pair
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def _wrong_count_pairs_presence(ids: list[int]) -> dict[tuple[int, int], int]:
    return {pair: 1 for pair in zip(ids, ids[1:])}  # says which pairs occur, not how often


def _count_case(ids: list[int], expected: dict[tuple[int, int], int]) -> Case:
    def run(candidate):
        expect_equal(dict(candidate(list(ids))), expected, f"count_pairs({ids})")

    return Case(f"count_pairs({ids})", run)


register(
    Exercise(
        key="1.1",
        title="count_pairs(ids): how often each adjacent pair of ids occurs, as a dict {(a, b): count}",
        cases=[
            _count_case([5, 6, 5, 6, 7], {(5, 6): 2, (6, 5): 1, (6, 7): 1}),
            _count_case([1, 1, 1], {(1, 1): 2}),
            _count_case([3, 4, 3, 4], {(3, 4): 2, (4, 3): 1}),
            _count_case([9], {}),
        ],
        solution=_solution_count_pairs,
        wrong_answers=[_wrong_count_pairs_non_overlapping, _wrong_count_pairs_presence],
        hint="Look at every position i with a neighbour i + 1: pairs overlap, so [1, 1, 1] holds (1, 1) twice.",
    )
)

# ---------------------------------------------------------------- 1.2 apply one merge


def _solution_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    merged: list[int] = []
    skip_next = False
    for position, current in enumerate(ids):
        if skip_next:  # this id was the second half of a merged pair
            skip_next = False
        elif tuple(ids[position : position + 2]) == tuple(pair):
            merged.append(new_id)
            skip_next = True
        else:
            merged.append(current)
    return merged


def _wrong_merge_first_only(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2 :]
    return list(ids)


def _wrong_merge_right_to_left(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    return _solution_merge(ids[::-1], (pair[1], pair[0]), new_id)[::-1]


def _list_case(name: str, ids: list[int], more_args: tuple, expected: list[int]) -> Case:
    """A case that calls ``candidate(ids, *more_args)``: the result must be ``expected`` and ``ids`` unchanged."""

    def run(candidate):
        given = list(ids)
        expect_equal(list(candidate(given, *more_args)), expected, name)
        expect_equal(given, ids, "the input list (it must not be modified)")

    return Case(name, run)


def _merge_case(ids: list[int], pair: tuple[int, int], new_id: int, expected: list[int]) -> Case:
    return _list_case(f"merge({ids}, {pair}, {new_id})", ids, (pair, new_id), expected)


register(
    Exercise(
        key="1.2",
        title="merge(ids, pair, new_id): replace every occurrence of pair by new_id, non-overlapping, left to right",
        cases=[
            _merge_case([5, 6, 7, 5, 6], (5, 6), 99, [99, 7, 99]),
            _merge_case([1, 1, 1], (1, 1), 7, [7, 1]),
            _merge_case([1, 2, 3], (2, 1), 9, [1, 2, 3]),
            _merge_case([4, 4, 4, 4, 5], (4, 4), 8, [8, 8, 5]),
        ],
        solution=_solution_merge,
        wrong_answers=[_wrong_merge_first_only, _wrong_merge_right_to_left],
        hint="Walk from the left; after a match, skip both ids of the pair. Build a new list.",
    )
)

# ---------------------------------------------------------------- 1.3 sliding windows


def _solution_windows(ids: list[int], max_length: int, step_size: int) -> list[tuple[list[int], list[int]]]:
    pairs = []
    for start in range(0, len(ids) - max_length, step_size):
        pairs.append((ids[start : start + max_length], ids[start + 1 : start + max_length + 1]))
    return pairs


def _wrong_windows_unshifted(ids: list[int], max_length: int, step_size: int) -> list[tuple[list[int], list[int]]]:
    return [(w, list(w)) for w, _ in _solution_windows(ids, max_length, step_size)]


def _wrong_windows_loses_last(ids: list[int], max_length: int, step_size: int) -> list[tuple[list[int], list[int]]]:
    return [
        (ids[s : s + max_length], ids[s + 1 : s + max_length + 1])
        for s in range(0, len(ids) - max_length - 1, step_size)
    ]


def _windows_case(ids: list[int], max_length: int, step_size: int, expected: list[tuple[list[int], list[int]]]) -> Case:
    def run(candidate):
        got = [(list(x), list(y)) for x, y in candidate(list(ids), max_length, step_size)]
        expect_equal(got, expected, f"windows({ids}, max_length={max_length}, step_size={step_size})")

    return Case(f"windows(ids of length {len(ids)}, max_length={max_length}, step_size={step_size})", run)


register(
    Exercise(
        key="1.3",
        title="windows(ids, max_length, step_size): the (input, target) pairs of a sliding window, target shifted by one",
        cases=[
            _windows_case([10, 11, 12, 13, 14], 2, 2, [([10, 11], [11, 12]), ([12, 13], [13, 14])]),
            _windows_case([1, 2, 3, 4], 3, 1, [([1, 2, 3], [2, 3, 4])]),
            _windows_case([1, 2, 3, 4, 5], 2, 1, [([1, 2], [2, 3]), ([2, 3], [3, 4]), ([3, 4], [4, 5])]),
            _windows_case([1, 2, 3], 3, 1, []),
        ],
        solution=_solution_windows,
        wrong_answers=[_wrong_windows_unshifted, _wrong_windows_loses_last],
        hint="A window needs max_length + 1 ids: its input is the first max_length, its target the last max_length.",
    )
)

# ---------------------------------------------------------------- 1.4 encode with learned merges


def _solution_encode_with_merges(ids: list[int], merges: dict[tuple[int, int], int]) -> list[int]:
    tokens = list(ids)
    for (left, right), new_id in merges.items():  # in the order they were learned
        merged: list[int] = []
        for token in tokens:
            if merged and merged[-1] == left and token == right:
                merged[-1] = new_id  # a fresh id, so it never pairs again within this pass
            else:
                merged.append(token)
        tokens = merged
    return tokens


def _wrong_encode_sorted_merges(ids: list[int], merges: dict[tuple[int, int], int]) -> list[int]:
    return _solution_encode_with_merges(ids, dict(sorted(merges.items())))  # forgets the learning order


def _wrong_encode_first_occurrence(ids: list[int], merges: dict[tuple[int, int], int]) -> list[int]:
    tokens = list(ids)
    for pair, new_id in merges.items():
        tokens = _wrong_merge_first_only(tokens, pair, new_id)
    return tokens


def _encode_case(ids: list[int], merges: dict[tuple[int, int], int], expected: list[int]) -> Case:
    return _list_case(f"encode_with_merges({ids}, {merges})", ids, (merges,), expected)


register(
    Exercise(
        key="1.4",
        title="encode_with_merges(ids, merges): apply the learned merges {(a, b): new_id}, in the order they were learned",
        cases=[
            _encode_case([1, 2, 3, 1, 2], {(1, 2): 4, (4, 3): 5}, [5, 4]),
            _encode_case([1, 2, 3], {(2, 3): 4, (1, 2): 5}, [1, 4]),
            _encode_case([1, 1, 1, 1, 1], {(1, 1): 2, (2, 2): 3}, [3, 1]),
            _encode_case([7, 8], {}, [7, 8]),
        ],
        solution=_solution_encode_with_merges,
        wrong_answers=[_wrong_encode_sorted_merges, _wrong_encode_first_occurrence],
        hint="Loop over merges.items() (a dict keeps insertion order) and replace every occurrence of each pair.",
    )
)
