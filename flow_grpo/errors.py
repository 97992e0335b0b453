"""The one kind of error a user can fix: bad input (a config value, a dataset, a model or checkpoint that does
not fit the settings). Entry points print its message and exit with status 2, without a traceback; any other
exception is a bug and keeps its traceback (status 1). Its subclasses name where the input came from
(``ConfigError``, ``ModelLoadError``, ``LoraLoadError``, ``CheckpointError``)."""


class InputError(ValueError):
    """Bad input, with a message that names the problem and the setting or file to change."""
