"""The application layer: whole jobs a user runs (evaluate a run, reproduce a preset, an AToP experiment, the
demo), composed from the library below; ``robustlab.cli`` parses arguments and prints what these return."""
