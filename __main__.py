"""`python -m comfyui_text2video run|batch|nodes ...`: see `cli.py`."""

import signal
import sys

try:
    from .headless.cli import main  # imports torch: seconds in which a Ctrl-C may come

    status = main()
except KeyboardInterrupt:  # main() handles it once running; this is start-up
    print("interrupted", file=sys.stderr)
    status = 130  # the CLI's EXIT_INTERRUPTED
signal.signal(signal.SIGINT, signal.SIG_DFL)  # winding down the interpreter can take seconds: Ctrl-C ends it at once
sys.exit(status)
