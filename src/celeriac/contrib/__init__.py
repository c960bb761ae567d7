"""Optional parts under Celery's `celery.contrib` names; those that need more than celeriac
itself name their extra (e.g. `pip install 'celeriac[otel]'`)."""
