"""A minimal Django project, set up as Celery's "First steps with Django" says, for celeriac."""

# The app is loaded when Django starts, so that @shared_task uses it.
from .celeriac import app as celeriac_app

__all__ = ("celeriac_app",)
