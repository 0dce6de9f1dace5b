"""``python -m stablenew`` is the ``stablenew`` command."""

from stablenew.cli import main

raise SystemExit(main())
