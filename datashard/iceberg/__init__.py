"""The Apache Iceberg format, pure: types, schemas, metadata and manifest models and codecs,
transforms, partitioning, expressions and data-file statistics. Nothing here does I/O; it
imports nothing of datashard but :mod:`datashard.errors`."""
