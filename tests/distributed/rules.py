"""A reward rule importable by every rank of a launched run."""


def share_of_e(problem, answer):
    """0..7 by the share of the letter e: varies across the tiny model's samples."""
    return min(7, round(70 * answer.lower().count("e") / max(len(answer), 1)))
