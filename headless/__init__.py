"""The headless runner: workflow formats and validation, execution, the command line."""
