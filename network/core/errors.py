"""The lab's one exception: an expected failure with a message meant for the user.

Every module raises ``LabError`` for what a user can cause and fix (a missing
file, a damaged model, an unreadable photo); ``cli.run_main`` prints it as one
line on stderr, without a traceback.
"""


class LabError(Exception):
    """An expected failure with a message meant for the user."""
