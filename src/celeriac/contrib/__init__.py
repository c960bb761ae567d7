"""Integrations with other frameworks and tools (Celery's `celery.contrib` paths); those that need
more than celeriac itself name their extra (e.g. `pip install 'celeriac[otel]'`)."""
