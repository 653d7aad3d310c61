"""Typed errors raised by the engine. The UI turns them into messages; none of them is ever swallowed."""


class SlmopsError(Exception):
    """Base class: every error the engine raises on purpose. The message says what is wrong and how to fix it."""


class InvalidInput(SlmopsError):
    """A path, id, config value or file that cannot work; nothing was changed."""


class NotFound(SlmopsError):
    """A model or run id that is not in the store."""


class UnsupportedModel(InvalidInput):
    """A model the engine refuses to load (architecture, pickle-only weights, remote code, no tokenizer)."""


class OfflineError(SlmopsError):
    """A Hugging Face Hub id was given while the machine is offline."""


class Busy(SlmopsError):
    """The object is in use (a model being prepared, a run still active)."""


class VerificationFailed(SlmopsError):
    """A job's product failed its check against its source (an export that lost what it was made from)."""


class Cancelled(BaseException):
    """Raised inside a job when its run was asked to stop. A BaseException (like KeyboardInterrupt), so that the
    `except Exception` blocks of libraries cannot swallow it or re-raise it as another error (a SIGTERM arriving
    inside a tokenizer call must still end the run as cancelled)."""
