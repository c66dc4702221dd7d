"""User-facing errors: one line that says what was wrong and how to fix it."""


class ShieldError(Exception):
    """An error caused by the user's input or environment, printed as one line by the CLI."""

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)
