"""Optional integrations (Celery's `celery.contrib` paths): the pytest plugin and friends."""
