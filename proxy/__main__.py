"""``python -m proxy`` runs the ``inventory-proxy`` command."""

from proxy.cli import main

raise SystemExit(main())
