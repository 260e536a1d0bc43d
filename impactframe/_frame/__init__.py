"""Pages into the typed, validated DataFrame of SPEC §3: one builder, one batch type.

Import from the modules: `_builder` (`FrameBuilder`, `records_to_frame`, `empty_frame`),
`_batch` (`Chunk`, what both readers produce), `_arrow_reader` and `_python_reader` (the two
readers), `_values` (values as sent), `_repeats` (the repeat rule), `_drift` (what ``finish``
decides, `Findings`), `_assemble` (the frame of the chunks).
"""
