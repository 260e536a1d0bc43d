"""What the partitioned readers (`impactframe.dask`, `impactframe.spark`) share."""

from ._key import HiddenKey
from ._layout import (
    PREFIX,
    check_metadata_keys,
    check_npartitions,
    conform,
    meta_frame,
    months,
)
from ._spark_options import SPARK_OPTIONS, SparkConfig, int_option, spark_config, split_option

__all__ = [
    "PREFIX",
    "SPARK_OPTIONS",
    "HiddenKey",
    "SparkConfig",
    "check_metadata_keys",
    "check_npartitions",
    "conform",
    "int_option",
    "meta_frame",
    "months",
    "spark_config",
    "split_option",
]
