"""Tasks of the test project: they use the ORM inside a real worker."""

import logging
import os
import uuid

from celeriac import shared_task, signals
from django.db import connection, transaction

from .models import Note


@shared_task
def mark_seen(note_id):
    """Reads the row the caller committed, and writes to it."""
    note = Note.objects.get(pk=note_id)  # DoesNotExist if published before the commit
    note.seen_by_task = True
    note.save(update_fields=["seen_by_task"])
    return note.title


@shared_task
def connection_token():
    """Which SQLite connection this is: a random token kept in a TEMP table, which only the
    connection that created it can see; plus whether it is in autocommit mode."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS conn_token (token TEXT)")
        cursor.execute("SELECT token FROM conn_token")
        row = cursor.fetchone()
        if row is None:
            row = (uuid.uuid4().hex,)
            cursor.execute("INSERT INTO conn_token VALUES (%s)", row)
    from django.core.cache import cache
    from djproj.cache import CountingCache
    cache.get("used")  # the cache is opened in this process, so it has something to close
    return {"token": row[0], "autocommit": connection.get_autocommit(), "pid": os.getpid(),
            "notes": Note.objects.count(), "cache_closed": CountingCache.closed}


@shared_task
def break_connection(then_query=False):
    """Closes the connection under Django's feet, as a database server that went away would."""
    token = connection_token()["token"]
    connection.connection.close()
    if then_query:
        Note.objects.count()  # fails: Django sees the error, and the task fails with it
    return token


@shared_task
def leave_transaction_open(title):
    """Turns autocommit off and writes without committing: a task that forgot its transaction."""
    transaction.set_autocommit(False)
    Note.objects.create(title=title)
    return connection_token()["token"]


@signals.worker_ready.connect
def open_connection_in_supervisor(**_):
    """The supervisor uses the database after it started (as a worker_ready handler may): pool
    processes it forks later inherit this connection, and must not use it."""
    if os.environ.get("DJPROJ_SUPERVISOR_CONNECTION"):
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS conn_token (token TEXT)")
            cursor.execute("INSERT INTO conn_token VALUES ('supervisor')")
        logging.getLogger("notes").warning("the supervisor opened a database connection")
