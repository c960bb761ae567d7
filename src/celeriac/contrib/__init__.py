"""Optional parts under Celery's `celery.contrib` names."""
