"""The web's entry point for a WSGI server: `gunicorn web.wsgi:app`.

Gunicorn imports this in each worker after it forks (no --preload), so every worker makes its own clients.
"""

from __future__ import annotations

from bootstrap import Services
from web.app import create_app

services = Services.from_environment()
app = create_app(services.settings, services.run_reads, services.objects)
