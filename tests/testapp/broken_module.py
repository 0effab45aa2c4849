"""A module that fails while being imported, as a deploy with a bug in it would."""

raise RuntimeError("broken_module cannot be imported")


def job():  # pragma: no cover - never reached
    return None
