"""datashard: transactional Apache Iceberg v2 tables on object storage."""

from datashard.errors import *  # noqa: F403
from datashard.errors import __all__ as _error_names

__version__ = "0.1.0"

__all__ = ["__version__", *_error_names]
