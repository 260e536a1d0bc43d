"""The Parquet cache of SPEC §6.

Import from the modules: `_store` (`ParquetCache`, the manifest protocol), `_key`, `_codec`,
`_files` (the root folder) and `_refresh` (the refresh merge).
"""
