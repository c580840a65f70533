"""A sibling module that must travel with the bundle."""


def shout(text: str) -> str:
    return text.upper() + "!"


def fail_here(message: str) -> None:
    raise ValueError(message)  # the traceback must point at this line: helpers.py line 9
