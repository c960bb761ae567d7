"""Integrations with other projects; each needs its own extra (e.g. `pip install 'celeriac[otel]'`)."""
