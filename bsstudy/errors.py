"""User-facing errors: one line, exit code 2, nothing half-written."""


class UserError(Exception):
    """Bad input from the user (config key, file, value). The CLI prints ``bsstudy: error: <msg>`` and exits 2."""
