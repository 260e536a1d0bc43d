"""Old import path of the one builder's helpers (until every branch imports `_builder`)."""

from ._builder import FrameBuilder, empty_frame, records_to_frame

__all__ = ["FrameBuilder", "empty_frame", "records_to_frame"]
