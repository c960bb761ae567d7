"""Django's SQLite backend with a real usability check.

SQLite's own backend says a connection is always usable, since a file cannot go away
under it. A server connection can (a restarted PostgreSQL, an idle timeout); this backend
lets the tests break a connection and see the worker replace it, as it would a dropped
PostgreSQL connection.
"""

import sqlite3

from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper


class DatabaseWrapper(SQLiteDatabaseWrapper):
    def is_usable(self):
        try:
            self.connection.execute("SELECT 1")
        except sqlite3.Error:
            return False
        return True
