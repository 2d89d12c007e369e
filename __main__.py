"""`python -m comfyui_text2video run|batch|nodes ...`: see `cli.py`."""

import sys

from .headless.cli import main

sys.exit(main())
