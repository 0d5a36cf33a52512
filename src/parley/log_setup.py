"""Process-wide logging of `parley serve` (and of each of its worker processes): level, format, and the
third-party loggers kept from writing secrets.

At debug level `aiosqlite` logs every call it runs with its arguments (so each client key's SHA-256, looked
up on every request, would land in the log); it is held at INFO. SQLAlchemy's own statement logging is
given no parameters at all (`hide_parameters` in store/sql.py), which also keeps them out of its error texts.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers whose debug output carries query parameters (key hashes among them).
_PARAMETER_LOGGERS = ("aiosqlite",)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for name in _PARAMETER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # its own level (NOTSET follows the root, which may go to DEBUG later)
            logger.setLevel(logging.INFO)
