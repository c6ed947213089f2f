"""Entry point: `python3 scripts/soak` (what `make soak` runs), or
`python3 -m soak` from scripts/. Documentation in __init__.py."""

import sys
from pathlib import Path

if not __package__:
    # Run as a directory: make the package importable as `soak`.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soak.main import main  # noqa: E402

sys.exit(main())
