"""The project's one exception: its message is meant for the user as it is."""


class NoiseKDError(Exception):
    """An error whose message is meant for the user as it is: one line naming the culprit."""
