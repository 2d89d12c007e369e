"""The command line's exit codes (`run` and `batch`)."""

EXIT_OK = 0
EXIT_FAILED = 1  # a node failed
EXIT_INVALID = 2  # the workflow (or a job's) is invalid: nothing ran
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
