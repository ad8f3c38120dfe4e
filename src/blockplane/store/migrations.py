"""Schema migrations, in order. Never edit a released entry: append a new one."""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE pools (
            name TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            path TEXT NOT NULL,
            capacity_bytes INTEGER,
            chunk_bytes INTEGER NOT NULL,
            utilization_pct INTEGER NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE vms (
            name TEXT PRIMARY KEY,
            uuid TEXT NOT NULL UNIQUE,
            vcpus INTEGER NOT NULL,
            memory_bytes INTEGER NOT NULL,
            guest TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE volumes (
            pool TEXT NOT NULL REFERENCES pools(name),
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            format TEXT NOT NULL,
            virtual_bytes INTEGER NOT NULL,
            physical_bytes INTEGER NOT NULL,
            thin INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            PRIMARY KEY (pool, name)
        )""",
        """CREATE TABLE disks (
            vm TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
            target TEXT NOT NULL,
            pool TEXT NOT NULL,
            volume TEXT NOT NULL,
            bus TEXT NOT NULL,
            plan_json TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            PRIMARY KEY (vm, target),
            FOREIGN KEY (pool, volume) REFERENCES volumes(pool, name)
        )""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            type TEXT NOT NULL,
            vm TEXT,
            data_json TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_vm ON events(vm, id)",
        """CREATE TABLE idempotency (
            key TEXT PRIMARY KEY,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            status INTEGER NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
    ),
)
