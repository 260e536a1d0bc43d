"""Pages into the typed, validated DataFrame of SPEC §3.

Import from the modules: `_builder` (the builder the loaders use), `_reference` (the reference
builder), `_arrow_reader`, `_python_reader`, `_columns`, `_repeats`, `_drift`, `_options`.
"""
