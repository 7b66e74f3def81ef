"""Every error the user can fix. The command-line tools print one of these as a single
``error: ...`` line and exit with status 2; anything else is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(ValueError):
    """A bad argument or input file the user can fix."""


class ModelError(UserError):
    """The .tflite file is unreadable or outside what we compile."""


class UnknownTarget(UserError):
    """A target name that no file in targets/ declares."""


class BundleError(UserError):
    """A bundle dir that is missing, not a bundle, or built for something else."""


class BackendError(RuntimeError):
    """A backend problem the user can fix: a missing tool, a model that does not fit the
    board, an operator a backend refuses."""


class TuningError(BackendError):
    """A tuning problem the user can fix (tracker unreachable, no server for the key, ...)."""


def user_errors() -> tuple[type[Exception], ...]:
    """The exception types printed as one ``error:`` line."""
    errors: list[type[Exception]] = [UserError, BackendError]
    try:   # data problems (missing Fashion-MNIST, ...) from the training package
        from keras_model.data import DataError
        errors.append(DataError)
    except ImportError:
        pass
    return tuple(errors)
