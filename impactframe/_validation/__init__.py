"""What the package's pandera schemas share: pandera imported without pyspark, exact dtypes."""

from ._pandera import (
    SPARE_PYSPARK,
    ExactDtype,
    ImpactCategory,
    actual_dtype,
    pandera_without_pyspark,
)

__all__ = [
    "SPARE_PYSPARK",
    "ExactDtype",
    "ImpactCategory",
    "actual_dtype",
    "pandera_without_pyspark",
]
